"""TinyCLIP's manual weight inheritance: a student that starts as a slice of its teacher.

TinyCLIP (Wu et al., ICCV 2023, arXiv 2309.12314, §3.2 "manual inheritance"; code: microsoft/Cream,
``TinyCLIP/src/open_clip/weight_inherit.py`` called per tower by ``src/training/main.py``) builds the
student's initial weights from the teacher's instead of a random draw, tower by tower:

* depth — the student's block ``i`` takes the teacher's block ``i·step`` with
  ``step = ⌊L_T / L_S⌋`` (the code's ``interval_front``: layers ``0, step, 2·step, …``);
* width — every tensor keeps its *first* entries along each axis (``W[:d_0, :d_1, …]``), except the
  attention's packed ``in_proj`` (q, k, v stacked), which is viewed as ``(3, heads, head_dim, width)`` and
  keeps the first heads of each of q, k and v and the first input channels;
* scalars (one element) are copied as they are.

Which tensors a tower owns follows the official call: the image tower is every ``visual.*`` key, the text
tower every other key except the logit scale (TinyCLIP keeps its logit scale in a separate module that is
not inherited and starts it at ``--logit-scale 50``; the lab keeps the student's own initial scale).

This needs the student to be a *slice* of the teacher: same patch size, image size, head width and
vocabulary, no larger in any width or depth. :func:`check_slice` says which of these fails, in one sentence.
"""

from __future__ import annotations

import re

import torch

from lab.errors import LabError

BLOCK = re.compile(r"^(.*resblocks)\.(\d+)\.(.*)$")
TOWER_EXCLUDED = ("logit_scale", "logit_bias")


def layer_indices(teacher_depth: int, student_depth: int) -> list[int]:
    """The teacher's blocks the student's blocks come from: ``0, step, 2·step, …`` with ``step = ⌊L_T/L_S⌋``."""
    step = teacher_depth // max(student_depth, 1)
    return list(range(0, student_depth * step, step))


def front_slice(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The first entries of ``tensor`` along every axis, to ``shape`` (a one-element tensor is kept whole)."""
    if tensor.numel() == 1:
        return tensor.clone()
    return tensor[tuple(slice(0, s) for s in shape)].clone()


def slice_in_proj(tensor: torch.Tensor, shape: torch.Size, head_dim: int) -> torch.Tensor:
    """The first heads of each of q, k, v (and the first input channels) of a packed ``in_proj`` tensor."""
    t_heads, s_heads = tensor.shape[0] // (3 * head_dim), shape[0] // (3 * head_dim)
    if tensor.dim() == 2:
        return tensor.view(3, t_heads, head_dim, tensor.shape[1])[:, :s_heads, :, :shape[1]].reshape(shape).clone()
    return tensor.view(3, t_heads, head_dim)[:, :s_heads].reshape(shape).clone()


def _depth(keys) -> int:
    blocks = {int(m.group(2)) for k in keys if (m := BLOCK.match(k))}
    return max(blocks) + 1 if blocks else 0


def inherit_tower(student: dict, teacher: dict, head_dim: int) -> dict:
    """One tower's student state dict, every tensor taken from the teacher's (TinyCLIP's ``weight_inherit``)."""
    idx = layer_indices(_depth(teacher), _depth(student))
    out = {}
    for key, like in student.items():
        m = BLOCK.match(key)
        source = f"{m.group(1)}.{idx[int(m.group(2))]}.{m.group(3)}" if m else key
        value = teacher[source]
        if ".attn.in_proj_" in key:
            out[key] = slice_in_proj(value, like.shape, head_dim)
        else:
            out[key] = front_slice(value, like.shape)
    return out


def towers(state: dict) -> tuple[dict, dict]:
    """The image tower's keys (``visual.*``) and the text tower's (the rest, less the logit scale/bias)."""
    image = {k: v for k, v in state.items() if k.startswith("visual.")}
    text = {k: v for k, v in state.items() if not k.startswith("visual.") and k not in TOWER_EXCLUDED}
    return image, text


def _tower_facts(model) -> dict:
    visual, text = model.visual, model
    facts = {}
    for name, tower in (("image", visual), ("text", text)):
        blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
        if not blocks:
            facts[name] = None
            continue
        facts[name] = {"head width": blocks[0].attn.head_dim, "width": blocks[0].attn.embed_dim,
                       "heads": blocks[0].attn.num_heads, "layers": len(blocks)}
    if facts["image"] is not None:
        facts["image"]["patch size"] = tuple(visual.conv1.weight.shape[-2:])
        facts["image"]["image size"] = tuple(visual.image_size) if isinstance(visual.image_size, (tuple, list)) \
            else (visual.image_size, visual.image_size)
    if facts["text"] is not None:
        facts["text"]["vocabulary"] = model.token_embedding.weight.shape[0]
        facts["text"]["context length"] = model.positional_embedding.shape[0]
    return facts


def check_slice(student, teacher) -> None:
    """Raise one :class:`LabError` sentence when ``student`` is not a structural slice of ``teacher``."""
    s_facts, t_facts = _tower_facts(student), _tower_facts(teacher)
    for tower in ("image", "text"):
        s, t = s_facts[tower], t_facts[tower]
        if s is None or t is None:
            raise LabError(f"Weight inheritance needs open_clip transformer towers on both sides; the {tower} tower "
                           f"of the {'student' if s is None else 'teacher'} is not one, so use student init=random.")
        for fact in ("patch size", "image size", "head width", "vocabulary", "context length"):
            if fact in s and s[fact] != t[fact] and not (fact == "context length" and s[fact] < t[fact]):
                raise LabError(f"The student is not a slice of the teacher: its {tower} tower's {fact} is {s[fact]}, "
                               f"the teacher's {t[fact]}; weight inheritance needs the same {fact} "
                               f"(pick a student with it, or use init=random).")
        for fact in ("width", "heads", "layers"):
            if s[fact] > t[fact]:
                raise LabError(f"The student is not a slice of the teacher: its {tower} tower has {s[fact]} {fact}, "
                               f"more than the teacher's {t[fact]}; pick a smaller student or use init=random.")
    s_state, t_state = student.state_dict(), teacher.state_dict()
    for key, value in s_state.items():
        if key in TOWER_EXCLUDED:
            continue
        m = BLOCK.match(key)
        probe = f"{m.group(1)}.0.{m.group(3)}" if m else key
        if probe not in t_state or any(a > b for a, b in zip(value.shape, t_state[probe].shape)) \
                or value.dim() != t_state[probe].dim():
            raise LabError(f"The student is not a slice of the teacher: its tensor {key} {tuple(value.shape)} has no "
                           f"larger counterpart in the teacher; use init=random.")


def inherit_state(student, teacher) -> dict:
    """The student's state dict with every tower tensor inherited from ``teacher`` (both ``nn.Module`` CLIPs)."""
    check_slice(student, teacher)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    heads = _tower_facts(student)
    s_image, s_text = towers(s_state)
    t_image, t_text = towers(t_state)
    new = dict(s_state)
    new.update(inherit_tower(s_image, t_image, heads["image"]["head width"]))
    new.update(inherit_tower(s_text, t_text, heads["text"]["head width"]))
    return new


def inherit(student_clip, teacher_clip) -> None:
    """Overwrite ``student_clip``'s weights in place with those inherited from ``teacher_clip`` (lab ClipModels)."""
    state = inherit_state(student_clip.model, teacher_clip.model)
    device = next(student_clip.model.parameters()).device
    student_clip.model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    student_clip.source = f"{student_clip.arch} inherited from {teacher_clip.source}"


# --------------------------------------------------------------------------- the trainers' ``init`` key

INITS = ("random", "inherit")


def check_init(init: str) -> None:
    """``random`` (the seed's draw), ``inherit`` (from the run's teacher) or ``inherit:SPEC`` (from any model)."""
    kind, _, spec = init.partition(":")
    if kind not in INITS or (kind == "random" and spec) or (kind == "inherit" and _ and not spec):
        raise LabError(f"Unknown init '{init}'; choose random, inherit (from the run's teacher) or inherit:SPEC "
                       f"(e.g. inherit:shipped).")


def initialise(student_clip, init: str, teacher_clip=None) -> None:
    """Apply a trainer's ``init`` to the student it built first with :func:`lab.models.zoo.load_student`.

    ``random`` leaves the seed's draw; ``inherit`` overwrites it with the weights inherited from
    ``teacher_clip`` (or from ``SPEC`` for ``inherit:SPEC``, loaded without touching torch's global
    generator, so the rest of the run draws the same numbers as a randomly initialised one).
    """
    from lab.models import zoo

    check_init(init)
    kind, _, spec = init.partition(":")
    if kind == "random":
        return
    if spec or teacher_clip is None:
        with torch.random.fork_rng(devices=[]):
            teacher_clip = zoo.load_teacher(spec or "shipped", str(next(student_clip.model.parameters()).device))
    inherit(student_clip, teacher_clip)
