"""The authors' released code, loaded from a local copy of their repositories for parity tests.

Nothing of it is committed: ``LAB_PEER_REPOS`` (default /work/.mirror) holds git mirrors laid out as
``<owner>+<name>/repo`` (what the lab's maintainers' ``fetch`` writes) or plain checkouts
``<owner>/<name>``; a test that needs one it cannot find is skipped with a sentence naming the fix.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import types
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("LAB_PEER_REPOS", "/work/.mirror"))


def read(repo: str, path: str) -> str:
    """The text of ``path`` in the authors' repository ``owner/name`` at its checked-out head."""
    owner, name = repo.split("/")
    mirror, checkout = ROOT / f"{owner}+{name}" / "repo", ROOT / owner / name
    if (checkout / path).is_file():
        return (checkout / path).read_text()
    if mirror.is_dir():
        done = subprocess.run(["git", "--git-dir", str(mirror), "show", f"HEAD:{path}"], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
    pytest.skip(f"{repo}:{path} is not in LAB_PEER_REPOS={ROOT}; clone github.com/{repo} there "
                f"(as {owner}/{name}) to run this parity test.")


def patched_open_clip_loss(tmp_path: Path) -> types.ModuleType:
    """The installed ``open_clip/loss.py`` with ml-mobileclip's ``training/open_clip_v2.patch`` applied
    (only its ``src/open_clip/loss.py`` part), imported as a module: DRClipLoss, DistillSigLipLoss, …"""
    import open_clip.loss

    text = read("apple/ml-mobileclip", "training/open_clip_v2.patch")
    part, keep = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("diff --git"):
            keep = line.strip().endswith("b/src/open_clip/loss.py")
            continue
        if keep:
            part.append(line)
    if shutil.which("patch") is None:
        pytest.skip("The `patch` program is needed to apply open_clip_v2.patch; install it (apt-get install patch).")
    target = tmp_path / "loss.py"
    target.write_text(Path(open_clip.loss.__file__).read_text())
    done = subprocess.run(["patch", "--silent", str(target)], input="".join(part), capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"open_clip_v2.patch no longer applies to the installed open_clip: {done.stdout.strip()}")
    module = types.ModuleType("open_clip_v2_loss")
    exec(compile(target.read_text(), str(target), "exec"), module.__dict__)
    return module


def function_source(text: str, name: str) -> str:
    """The source of the top-level function ``name`` in ``text`` (ast), to run without its module's imports."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node)
    raise AssertionError(f"{name} is no longer defined in the peer file; update the parity test.")


def dime_fm() -> types.SimpleNamespace:
    """DIME-FM's ``get_loss``/``compute_kl_loss`` (Training/utils/utils.py) and ``set_logit_scale``
    (Training/utils/split_network.py), runnable on CPU: the ``.cuda(non_blocking=True)`` moves are removed."""
    utils = read("sunxm2357/DIME-FM", "Training/utils/utils.py")
    split = read("sunxm2357/DIME-FM", "Training/utils/split_network.py")
    utils = utils.replace(".cuda(non_blocking=True)", "").replace(".cuda( non_blocking=True)", "")
    namespace: dict = {}
    exec(compile(utils, "DIME-FM/Training/utils/utils.py", "exec"), namespace)
    exec(compile(function_source(split, "set_logit_scale"), "DIME-FM/split_network.py", "exec"), namespace)
    return types.SimpleNamespace(**namespace)
