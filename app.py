"""The lab's dashboard: ``streamlit run app.py`` (reads run directories only)."""

import os

import streamlit as st

from lab.app.pages import all_pages, remember_widgets

st.set_page_config(page_title="CLIP distillation lab", layout="wide")
st.session_state.setdefault("runs_dir", os.environ.get("LAB_RUNS_DIR", "runs"))
st.sidebar.text_input("Runs directory", key="runs_dir")
remember_widgets()
st.navigation(all_pages()).run()
