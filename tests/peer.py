"""Read a file of an official repository from a local copy, for parity tests (never committed here).

``LAB_PEER_REPOS`` (default ``/work/.mirror``) holds copies named ``owner+name``: a working tree
(``owner+name/<path>``) or a bare mirror (``owner+name/repo``, read with ``git show HEAD:<path>``).
A test calls :func:`peer_module` and is skipped, with a sentence saying what to fetch, when the copy is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest


def peer_source(repo: str, path: str) -> str:
    root = Path(os.environ.get("LAB_PEER_REPOS", "/work/.mirror")) / repo.replace("/", "+")
    if (root / path).is_file():
        return (root / path).read_text()
    git_dir = root / "repo"
    if git_dir.is_dir():
        done = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
    pytest.skip(f"no local copy of {repo}:{path} under LAB_PEER_REPOS={root.parent}; clone {repo} there as "
                f"{root.name}/ to run this parity test")


def peer_module(repo: str, path: str, name: str, stubs: dict | None = None) -> types.ModuleType:
    """Execute the official file as a module (``stubs``: fake modules it imports but the test does not need)."""
    source = peer_source(repo, path)
    saved = {k: sys.modules.get(k) for k in (stubs or {})}
    sys.modules.update(stubs or {})
    try:
        module = types.ModuleType(name)
        module.__file__ = f"{repo}/{path}"
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module
