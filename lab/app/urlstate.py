"""Views in the URL: each page's settings that matter live in ``st.query_params``, so a copied link (or F5)
opens the same view in a fresh browser.

``restore(page)`` runs before the page draws: a URL parameter presets its widget when the session has
no value for it yet (a fresh tab, a pasted link). ``publish(page)`` runs after: the widgets' values
go back into the URL. A value the page cannot show (a run that is not in the runs folder, an item
not on the map) is dropped by :func:`lab.app.data.keep_known`, which then says what the link named
and that the page opened on its default (:func:`unknown`).
"""

from __future__ import annotations

import streamlit as st

# page -> widget key -> (URL parameter, type); list parameters are comma-separated
PARAMS: dict[str, dict[str, tuple[str, type]]] = {
    "geometry": {"geometry_run": ("run", str), "geometry_projection": ("projection", str),
                 "geometry_colour": ("colour", str), "geometry_items": ("items", int),
                 "geometry_texts": ("captions", bool), "geometry_search": ("q", str),
                 "geometry_item": ("item", int), "geometry_step": ("step", int),
                 "geometry_compare": ("compare", str)},
    "similarity": {"similarity_run": ("run", str), "similarity_pair": ("pair", str),
                   "similarity_softmax": ("softmax", bool), "similarity_temperature": ("temperature", float),
                   "similarity_compare": ("compare", str)},
    "curves": {"curve_runs": ("runs", list), "curve_keys": ("keys", list), "curve_smoothing": ("smoothing", float),
               "curve_log_y": ("log_y", bool), "curve_x": ("x", str)},
    "ablations": {"sweep_table": ("table", str), "ablation_metric": ("metric", str),
                  "ablation_protocol": ("protocol", str), "ablation_source": ("source", str)},
    "protocols": {"protocol": ("protocol", str)},
    "divergence": {"divergence_run": ("run", str), "divergence_k": ("k", int), "divergence_item": ("item", int)},
}
FROM_URL = "_from_url"  # session key: the widget keys whose value came from the link, and what it said


def parse(text: str, kind: type):
    if kind is bool:
        return text.lower() in ("1", "true", "yes")
    if kind is list:
        return [t for t in text.split(",") if t]
    return kind(text)


def show(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def restore(page: str) -> None:
    """Preset ``page``'s widgets from the URL where this session has no value for them yet."""
    came = st.session_state.setdefault(FROM_URL, {})
    for key, (name, kind) in PARAMS.get(page, {}).items():
        if name not in st.query_params or key in st.session_state:
            continue
        text = st.query_params[name]
        try:
            st.session_state[key] = parse(text, kind)
            came[key] = text
        except ValueError:
            came[key] = text
            st.session_state.setdefault("_url_problems", []).append(f"`{name}={text}` is not a {kind.__name__}")


def publish(page: str) -> None:
    """Write ``page``'s current widget values into the URL (and nothing else)."""
    params = {name: show(st.session_state[key]) for key, (name, _) in PARAMS.get(page, {}).items()
              if key in st.session_state and st.session_state[key] is not None}
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
    st.session_state[FROM_URL] = {}  # the link's values have been shown, or said to be unknown


def unknown(key: str, value, default=None) -> None:
    """Say that the link named ``value`` for ``key``, which this page cannot show, and what it shows instead."""
    came = st.session_state.get(FROM_URL, {})
    if key not in came:
        return
    name = next((n for p in PARAMS.values() for k, (n, _) in p.items() if k == key), key)
    instead = f"; showing {default} instead" if default is not None else "; showing the page's default instead"
    st.warning(f"The link asks for {name} `{came.pop(key)}`, which is not here{instead}.")


def problems() -> None:
    for problem in st.session_state.pop("_url_problems", []):
        st.warning(f"The link's {problem}; the page's default is shown instead.")
