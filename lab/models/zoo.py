"""Model presets and loading: real open_clip models, from a preset, a pretrained tag or a file.

A *model spec* is one string:

* ``shapes-teacher`` / ``shapes-student`` (or any open_clip architecture name) — random init;
* ``ARCH:TAG`` — open_clip pretrained weights, e.g. ``ViT-B-32:openai`` (needs the weights
  cached locally when offline);
* ``ARCH:/path/to/weights.pt`` — an open_clip state dict on disk;
* a path to a lab weights file (``*.safetensors``), a training checkpoint (``last.pt``) or
  a run directory — the architecture is read from the file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file, save

from lab.errors import LabError
from lab.paths import DATA_DIR
from lab.runs import atomic_write_bytes

PRESET_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(PRESET_DIR)
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.json")))
SHIPPED_TEACHER = DATA_DIR / "teacher" / "shapes-teacher.safetensors"


@dataclass
class ClipModel:
    """An open_clip CLIP with its tokenizer and image normalisation, plus where it came from."""

    model: torch.nn.Module
    tokenizer: object
    arch: str
    source: str
    _token_cache: dict = field(default_factory=dict, repr=False)

    @property
    def embed_dim(self) -> int:
        """The joint embedding's width, for ``CLIP`` and ``CustomTextCLIP`` (MobileCLIP, SigLIP, EVA, CoCa …) alike."""
        return embed_dim(self.model, self.arch)

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """SigLIP-style models' learned logit bias (None for CLIP): ``logits = scale · v tᵀ + bias``.

        Every softmax-based term is unchanged by a constant added to every logit, so the
        contrastive and relational terms read the scale only; the bias is kept with the weights."""
        return getattr(self.model, "logit_bias", None)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_tensor(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W, 3) -> normalised float tensor (N, 3, S, S) on the model's device.

        Images of another size are resized (bilinear, antialiased) to the model's input size S,
        so a teacher and a student with different input sizes can read the same batch.
        """
        x = torch.as_tensor(images, device=self.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False).clamp_(0.0, 1.0)
        cfg = self.model.visual.preprocess_cfg
        mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(next(self.model.parameters()).dtype)  # a float64 model gets float64 inputs

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids (N, context_length); captions repeat a lot, so each distinct one is tokenized once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._token_cache]
        if missing:
            if len(self._token_cache) > 200_000:
                self._token_cache.clear()
            self._token_cache.update(zip(missing, self.tokenizer(missing)))
        return torch.stack([self._token_cache[t] for t in texts]).to(self.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def embed_dim(model: torch.nn.Module, arch: str = "") -> int:
    """The embedding width from the model's config (open_clip's ``embed_dim``), else read off its text tower."""
    config = open_clip.get_model_config(arch) if arch else None
    if config and "embed_dim" in config:
        return int(config["embed_dim"])
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    tower = getattr(model, "text", None)
    if getattr(tower, "output_dim", None):
        return int(tower.output_dim)
    raise LabError(f"Cannot tell the embedding width of {type(model).__name__} ({arch}); "
                   f"load it by its open_clip architecture name.")


def tokenizer_for(arch: str):
    """open_clip's tokenizer for ``arch`` (its own BPE, or the Hugging Face tokenizer a config names).

    Offline, a Hugging Face tokenizer must already be in the local cache (or the config must name a
    local folder); if it is not, one sentence says which files are missing and how to get them."""
    try:
        return open_clip.get_tokenizer(arch)
    except (OSError, ValueError) as err:
        config = open_clip.get_model_config(arch) or {}
        name = config.get("text_cfg", {}).get("hf_tokenizer_name") or config.get("text_cfg", {}).get("hf_model_name")
        raise LabError(f"The tokenizer files of {arch} ({name or 'Hugging Face'}) are not available offline; download "
                       f"them once with network access (unset HF_HUB_OFFLINE) or point the config's "
                       f"hf_tokenizer_name at a local folder.") from err


def known_architectures() -> list[str]:
    return open_clip.list_models()


def _check_arch(arch: str) -> None:
    if arch not in open_clip.list_models():
        presets = ", ".join(PRESETS)
        raise LabError(f"Unknown model architecture '{arch}'; use a preset ({presets}) or an open_clip "
                       f"architecture such as ViT-B-32 (full list: open_clip.list_models()).")


def _offline_tag_missing(arch: str, tag: str) -> bool:
    """True when HF_HUB_OFFLINE is set and a known tag's weights are not in the local Hugging Face cache: the
    sentence comes at once, before a model is built and before open_clip's download attempt logs an error."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE or tag not in open_clip.list_pretrained_tags_by_model(arch):
        return False
    hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    if not hub:
        return False  # a URL download (open_clip's own cache): left to open_clip
    repo, filename = os.path.split(hub)  # "org/model/" (default file names) or "org/model/file.bin"
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return not any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def create(arch: str, pretrained: str | None = None, device: str = "cpu") -> ClipModel:
    """Build an open_clip model, randomly initialised or with pretrained weights (tag or file)."""
    _check_arch(arch)
    if pretrained and not os.path.isfile(pretrained) and _offline_tag_missing(arch, pretrained):
        raise LabError(f"Pretrained weights {arch}:{pretrained} are not available offline; download them once "
                       f"with network access (unset HF_HUB_OFFLINE) or pass a local file as {arch}:/path/to/weights.pt.")
    tokenizer = tokenizer_for(arch)  # before the weights: a missing tokenizer costs no model build
    logging.disable(logging.WARNING)  # open_clip warns on every random init
    try:  # open_clip reads a checkpoint file with torch.load(weights_only=True) or safetensors
        model = open_clip.create_model(arch, pretrained=pretrained, device=device, weights_only=True,
                                          pretrained_text=False)  # ARCH alone means random init, text tower too
    except pickle.UnpicklingError as err:
        raise unreadable_checkpoint(pretrained, err) from err
    except OSError as err:  # a Hugging Face text tower's config files, absent offline
        hf = (open_clip.get_model_config(arch) or {}).get("text_cfg", {}).get("hf_model_name")
        if not hf:
            raise
        raise LabError(f"{arch}'s text tower {hf} needs its Hugging Face config files, which are not available "
                       f"offline; download them once with network access (unset HF_HUB_OFFLINE) or point "
                       f"hf_model_name at a local folder.") from err
    except RuntimeError as err:
        if pretrained and not os.path.isfile(pretrained):
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if pretrained in tags:
                raise LabError(
                    f"Pretrained weights {arch}:{pretrained} are not available offline; download them once "
                    f"with network access (unset HF_HUB_OFFLINE) or pass a local file as {arch}:/path/to/weights.pt."
                ) from err
            raise LabError(f"'{pretrained}' is neither a file nor a pretrained tag of {arch}; "
                           f"known tags: {', '.join(tags) or 'none'}.") from err
        raise _mismatch(arch, pretrained, err) from err
    finally:
        logging.disable(logging.NOTSET)
    model.eval()
    return ClipModel(model, tokenizer, arch, f"{arch}:{pretrained}" if pretrained else arch)


def _mismatch(arch: str, path, err: Exception, cause: str = "") -> LabError:
    first = str(err).strip().splitlines()
    detail = next((line.strip() for line in first if "size mismatch" in line or "Missing key" in line), first[0] if first else "")
    if len(detail) > 160:  # shortened at a word, never mid-word
        detail = detail[:160].rsplit(" ", 1)[0].rstrip(",") + " …"
    fix = ("pass the architecture it was trained with" if not cause or "architecture" in cause
           else "re-save it as the model's own state dict")
    return LabError(f"Checkpoint {path} does not match architecture {arch} ({detail.rstrip('.')}); "
                    f"{cause + ', so ' if cause else ''}{fix}.")


# --------------------------------------------------------------------------- lab weight files


def save_weights(clip: ClipModel, path: str | Path, dtype: torch.dtype = torch.float32,
                 extra: dict | None = None) -> Path:
    """Write the model's weights as safetensors, with the architecture in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in clip.model.state_dict().items()}
    metadata = {"arch": clip.arch, "lab_format": "1", "extra": json.dumps(extra or {})}
    atomic_write_bytes(path, save(tensors, metadata=metadata))  # a full disk is one sentence, no tmp file left
    return path


# Prefixes wrappers put before every key: DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrapped(state: dict) -> dict:
    """A state dict without the wrapper prefix every key shares (``module.``, ``_orig_mod.``), as open_clip
    strips it when it reads a ``.pt``; the lab's own formats are read the same way."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state, changed = {k[len(prefix):]: v for k, v in state.items()}, True
    return state


def _likely_cause(model: torch.nn.Module, state: dict) -> str:
    """Why a state dict does not load, in words: a foreign prefix, no key in common, or another architecture."""
    expected, found = set(model.state_dict()), set(state)
    if not expected & found:
        prefixes = sorted({k.split(".", 1)[0] + "." for k in found})[:3]
        return (f"none of its keys match the model's (they start with {', '.join(prefixes)}); it may be wrapped "
                f"in another model or not be a CLIP state dict")
    return "it was probably trained with another architecture"


def _load_state(clip: ClipModel, state: dict, path) -> ClipModel:
    state = {k: v.float() if v.is_floating_point() else v for k, v in unwrapped(state).items()}
    try:
        clip.model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise _mismatch(clip.arch, path, err, _likely_cause(clip.model, state)) from err
    clip.source = str(path)
    return clip


def load_weights(path: str | Path, arch: str | None = None, device: str = "cpu") -> ClipModel:
    """Load a lab safetensors file (architecture from its metadata unless ``arch`` is given)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise LabError(f"Cannot read weights file {path} ({err}); re-download or re-create it.") from err
    arch = arch or metadata.get("arch")
    if not arch:
        raise LabError(f"{path} does not say its architecture; load it as ARCH:{path}.")
    return _load_state(create(arch, device=device), state, path)


def unreadable_checkpoint(path, err: Exception) -> LabError:
    """One sentence for a checkpoint ``torch.load(weights_only=True)`` refused: a pickled payload, or damage."""
    if "Unsupported global" in str(err):
        return LabError(f"Checkpoint {path} holds pickled Python objects, which the lab refuses to load because "
                        f"they could run code; re-save it as a plain state dict of tensors or as safetensors.")
    if isinstance(err, (EOFError, OSError)) or "zip archive" in str(err) or "central directory" in str(err):
        return LabError(f"Checkpoint {path} is truncated or unreadable ({type(err).__name__}: the file ends early or "
                        f"its archive is damaged); copy or download it again.")
    return LabError(f"Checkpoint {path} is corrupt or not a safe (weights-only) checkpoint ({type(err).__name__}); "
                    f"re-create it with the lab.")


def load_training_checkpoint(path: str | Path) -> dict:
    """A training checkpoint (``last.pt``), loaded without executing any code (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise LabError(f"Checkpoint {path} does not exist; check the path.") from err
    except Exception as err:
        raise unreadable_checkpoint(path, err) from err


CHECKPOINT_SUFFIXES = (".pt", ".safetensors", ".bin", ".pth")

# --------------------------------------------------------------------------- checkpoints from other training code

# Where other trainers keep the model's state dict: open_clip_train's epoch_N.pt and Lightning ("state_dict"),
# plain nesting ("model", "module"), then EMA copies (timm's "state_dict_ema", "model_ema", ...), in this order.
STATE_DICT_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema", "ema_state_dict", "ema")
# Prefixes every key may share: DDP/DataParallel, torch.compile, a Lightning module's attribute.
FOREIGN_PREFIXES = (*WRAPPER_PREFIXES, "model.")


def foreign_state_dict(obj, path) -> dict:
    """The model's state dict inside a checkpoint written by other training code (one sentence if none)."""
    if isinstance(obj, dict) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if nested is None:
            raise LabError(f"Checkpoint {path} holds no model state dict (its keys: {', '.join(map(str, obj))[:120]}); "
                           f"re-save the model's state_dict() alone.")
        obj = nested
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LabError(f"Checkpoint {path} is not a state dict of tensors; re-save the model's state_dict() alone.")
    changed = True
    while changed:
        changed = False
        for prefix in FOREIGN_PREFIXES:
            if all(k.startswith(prefix) for k in obj):
                obj, changed = {k[len(prefix):]: v for k, v in obj.items()}, True
    return obj


def load_foreign(arch: str, path: Path, device: str = "cpu") -> ClipModel:
    """``ARCH:/path/to/file.pt``: open_clip weights as another trainer saved them — torch.compile's
    ``_orig_mod.``, DDP's ``module.``, Lightning's ``{"state_dict": {"model.…"}}``, an EMA copy, open_clip_train's
    ``epoch_N.pt`` — read without running code; what our unwrapping cannot load goes through open_clip's own
    reader (its conversions of older layouts), and what neither loads is one sentence."""
    state = foreign_state_dict(load_training_checkpoint(path), path)  # truncated or pickled: one sentence
    try:
        return _load_state(create(arch, device=device), state, path)
    except LabError as ours:
        try:
            return create(arch, str(path), device=device)
        except LabError:
            raise ours from None


def load(spec: str | Path, device: str = "cpu") -> ClipModel:
    """Load a model from a spec string (see the module docstring)."""
    spec = str(spec)
    path = Path(spec)
    arch, colon, pretrained = spec.partition(":")
    if colon and not path.exists():  # ARCH:TAG, ARCH:/path/to/open_clip.pt, ARCH:/path/to/lab.safetensors
        if Path(pretrained).suffix == ".safetensors":
            return load_weights(pretrained, arch=arch, device=device)
        if Path(pretrained).suffix in CHECKPOINT_SUFFIXES and not Path(pretrained).is_file():
            raise LabError(f"Checkpoint {pretrained} does not exist; check the path.")
        if Path(pretrained).is_file():
            return load_foreign(arch, Path(pretrained), device=device)
        return create(arch, pretrained or None, device=device)
    if path.is_dir():
        candidates = [path / "checkpoints" / "last.pt", path / "model.safetensors"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise LabError(f"{path} holds no checkpoint (looked for checkpoints/last.pt); train it first.")
        path = found
    if path.suffix == ".safetensors" and path.is_file():
        return load_weights(path, device=device)
    if path.suffix == ".pt" and path.is_file():
        ckpt = load_training_checkpoint(path)
        if "model" not in ckpt or "arch" not in ckpt:
            raise LabError(f"{path} is not a lab training checkpoint; load open_clip weights as ARCH:{path}.")
        return _load_state(create(ckpt["arch"], device=device), ckpt["model"], path)
    if path.suffix in CHECKPOINT_SUFFIXES:
        raise LabError(f"Checkpoint {path} does not exist; check the path.")
    if os.sep in spec and not path.exists():
        raise LabError(f"{path} does not exist; pass a run directory, a checkpoint or weights file, a preset "
                       f"({', '.join(PRESETS)}) or ARCH:TAG.")
    return create(spec, device=device)


def load_student(spec: str | Path, seed: int, device: str = "cpu") -> ClipModel:
    """The student a trainer starts from: :func:`load` right after ``torch.manual_seed(seed)``.

    A model built from a config draws its initial weights from torch's global generator, so a student
    built after anything else that draws from it (a teacher's random initialisation before its weights
    are loaded, a projection head) would start elsewhere. Every trainer builds its student here, first,
    so every row of a grid at ``train.seed=k`` — the no-KD student, every objective, an online or a
    cached teacher, ShapesWorld or a file dataset — starts from the same weights (tests/test_one_start.py).
    The global generator is left as seeded-then-drawn, exactly as ``pretrain`` always had it, so the
    no-KD student's runs are unchanged by this function.
    """
    torch.manual_seed(seed)
    return load(spec, device=device)


def shipped_teacher(device: str = "cpu") -> ClipModel:
    """The ShapesWorld teacher that ships in ``data/teacher``."""
    if not SHIPPED_TEACHER.is_file():
        raise LabError(f"The shipped teacher {SHIPPED_TEACHER} is missing; restore it with git or rebuild it "
                       f"with `python -m lab pretrain --preset teacher`.")
    return load_weights(SHIPPED_TEACHER, device=device)


def load_teacher(spec: str, device: str) -> ClipModel:
    """A frozen teacher (eval mode, no gradients): ``shipped`` or any spec :func:`load` reads."""
    teacher = shipped_teacher(device) if spec == "shipped" else load(spec, device=device)
    teacher.model.eval().requires_grad_(False)
    return teacher
