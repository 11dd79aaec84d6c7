"""The lab's dashboard: ``streamlit run app.py`` (reads run directories only)."""

import os

import streamlit as st

from lab.app import ablations, curves, geometry, overview, protocols, similarity

st.set_page_config(page_title="CLIP distillation lab", layout="wide")
st.session_state.setdefault("runs_dir", os.environ.get("LAB_RUNS_DIR", "runs"))
st.sidebar.text_input("Runs directory", key="runs_dir")
navigation = st.navigation([
    st.Page(overview.page, title="Overview", url_path="overview", default=True),
    st.Page(geometry.page, title="Embedding geometry", url_path="geometry"),
    st.Page(similarity.page, title="Similarity matrices", url_path="similarity"),
    st.Page(ablations.page, title="Ablations", url_path="ablations"),
    st.Page(curves.page, title="Training curves", url_path="curves"),
    st.Page(protocols.page, title="Protocols", url_path="protocols"),
])
navigation.run()
