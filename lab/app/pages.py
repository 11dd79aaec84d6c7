"""The dashboard's pages, by URL path: the navigation (``app.py``) and links between pages use one list."""

from __future__ import annotations

import importlib

import streamlit as st

TITLES = {
    "overview": "Overview",
    "geometry": "Embedding geometry",
    "similarity": "Similarity matrices",
    "ablations": "Ablations",
    "curves": "Training curves",
    "protocols": "Protocols",
    "divergence": "Student vs teacher",
    "workbench": "Runs workbench",
}

# Widgets whose values survive a visit to another page (Streamlit forgets a widget's value once a
# run does not draw it): the run pickers and the views' settings.
REMEMBERED = ("geometry_run", "geometry_projection", "geometry_colour", "geometry_items", "geometry_texts",
              "geometry_search", "geometry_isolate", "geometry_item", "geometry_step", "geometry_compare",
              "similarity_run", "similarity_pair", "similarity_softmax", "similarity_temperature",
              "curve_runs", "curve_keys", "curve_smoothing", "curve_log_y", "curve_x",
              "sweep_table", "ablation_metric", "ablation_source", "ablation_protocol", "protocol",
              "protocol_run_base2novel", "protocol_run_cross", "protocol_run_domain",
              "divergence_run", "divergence_k", "divergence_item", "divergence_direction")


def remember_widgets() -> None:
    """Keep the :data:`REMEMBERED` widget values across page switches (call before the page runs)."""
    for key in REMEMBERED:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def streamlit_page(url_path: str) -> st.Page:
    """The page whose module is ``lab.app.<url_path>`` (imported when first asked for)."""
    module = importlib.import_module(f"lab.app.{url_path}")
    return st.Page(module.page, title=TITLES[url_path], url_path=url_path, default=url_path == "overview")


def all_pages() -> list[st.Page]:
    return [streamlit_page(path) for path in TITLES]


def open_with(url_path: str, **state) -> None:
    """Switch to a page with some of its widgets preset (e.g. the sidebar's run picker)."""
    st.session_state.update(state)
    st.switch_page(streamlit_page(url_path))
