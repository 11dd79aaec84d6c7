"""The lab's dashboard: ``streamlit run app.py`` (reads run directories only)."""

import os

import streamlit as st

from lab.app import urlstate
from lab.app.data import check_runs_dir_box
from lab.app.pages import all_pages, remember_widgets

st.set_page_config(page_title="CLIP distillation lab", layout="wide")
# Projector-ready at 1024×768: a smaller page heading and top margin, so each page's main chart is on screen.
st.markdown("<style>.block-container {padding-top: 2rem;} h1 {font-size: 2rem !important; padding-top: 0;}</style>",
            unsafe_allow_html=True)
st.session_state.setdefault("runs_dir", os.environ.get("LAB_RUNS_DIR", "runs"))
st.sidebar.text_input("Runs directory", key="runs_dir", on_change=check_runs_dir_box,
                      help="the runs folder the dashboard was started on, or a folder inside it")
if "runs_dir_refused" in st.session_state:
    st.sidebar.error(st.session_state.pop("runs_dir_refused"))
remember_widgets()
page = st.navigation(all_pages())
urlstate.restore(page.url_path)  # a link's view: its settings preset the page's widgets
urlstate.problems()
page.run()
urlstate.publish(page.url_path)  # the view's settings back into the URL, so that it can be shared
