"""The lessons' sources: one jupytext percent-format ``.py`` per lesson, paired with its ``.ipynb``.

An instructor edits either side: the ``.py`` in any editor (reviewable in git), or the notebook in
JupyterLab, where jupytext's server extension writes the paired ``.py`` on save. ``sync`` rewrites every
``.ipynb`` from its source, without outputs, with stable cell ids and the lab's version in its metadata
(``metadata.lab.version``, what ``python -m lab lessons update`` compares); ``stale`` lists those that differ.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from lab import __version__

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The lesson sources ``NN_name.py``, in order."""
    return sorted(folder.glob("[0-9][0-9]_*.py"))


def notebook_from_source(path: Path):
    """The notebook a source describes: no outputs, stable cell ids ``NN-cc``, the python3 kernel."""
    import jupytext

    notebook = jupytext.read(path, fmt="py:percent")
    prefix = path.stem[:2]
    for i, cell in enumerate(notebook.cells):
        cell.id = f"{prefix}-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata = {"jupytext": {"formats": "ipynb,py:percent"}, "kernelspec": dict(KERNELSPEC),
                         "language_info": {"name": "python"}, "lab": {"version": __version__}}
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return notebook


def comparable(notebook) -> list[tuple]:
    """What a notebook's source decides: each cell's type, source and tags."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def stale(folder: Path = NOTEBOOK_DIR) -> list[str]:
    """The notebooks that are missing or differ from their source (cells, tags or stored outputs)."""
    out = []
    for source in sources(folder):
        target = source.with_suffix(".ipynb")
        if not target.is_file():
            out.append(f"{target.name} is missing")
            continue
        stored = nbformat.read(target, as_version=4)
        if comparable(stored) != comparable(notebook_from_source(source)):
            out.append(f"{target.name} differs from {source.name}")
        elif stored.metadata.get("lab", {}).get("version") != __version__:
            out.append(f"{target.name} does not carry the lab's version {__version__}")
        elif any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in stored.cells):
            out.append(f"{target.name} holds outputs")
    return out


def sync(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Write every ``NN_name.ipynb`` from its ``NN_name.py``; returns the notebooks written."""
    written = []
    for source in sources(folder):
        target = source.with_suffix(".ipynb")
        nbformat.write(notebook_from_source(source), target)
        written.append(target)
    return written
