"""Deep prompts for open_clip towers (IVLP / PromptSRC style; PromptKD §3, ComKD-CLIP §3.1).

A tower gets ``depth`` sets of ``length`` learnable tokens:

* **vision**: the first set is appended after the positional embedding (before
  ``ln_pre``); before blocks 1 … depth−1 the last ``length`` positions of the
  residual stream are replaced by the next set. The CLS token is pooled as usual
  (prompt positions are dropped before pooling).
* **text**: the prompt is tokenised with ``length`` placeholder words after SOS
  (``"X X X X red circle."``); the first set replaces their token embeddings (before
  the positional embedding is added, as in CoOp), and before blocks 1 … depth−1 the
  same positions of the residual stream are replaced by the next set. EOT pooling
  is unchanged.

With ``prompts=None`` both encoders follow open_clip's own computation step by step,
so their outputs equal ``encode_image`` / ``encode_text`` (tested).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from open_clip.transformer import VisionTransformer, text_global_pool

from lab.errors import LabError

PLACEHOLDER = "X"


class DeepPrompts(nn.Module):
    """``depth`` × ``length`` learnable tokens of one tower's width (normal init, std 0.02)."""

    def __init__(self, length: int, depth: int, width: int, std: float = 0.02):
        super().__init__()
        if length < 1 or depth < 1:
            raise LabError(f"Deep prompts need length ≥ 1 and depth ≥ 1, got length {length} and depth {depth}.")
        self.length, self.depth = length, depth
        self.tokens = nn.Parameter(torch.randn(depth, length, width) * std)

    def at(self, layer: int, batch: int) -> torch.Tensor:
        return self.tokens[layer].unsqueeze(0).expand(batch, -1, -1)

    def extra_repr(self) -> str:
        return f"length={self.length}, depth={self.depth}, width={self.tokens.shape[-1]}"


def _check_depth(prompts: DeepPrompts | None, blocks: int) -> None:
    if prompts is not None and prompts.depth > blocks:
        raise LabError(f"Prompt depth {prompts.depth} exceeds the tower's {blocks} blocks; use depth ≤ {blocks}.")


def _run_blocks(transformer, x: torch.Tensor, prompts: DeepPrompts | None, start: int,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The transformer's blocks, replacing positions [start, start+length) before blocks 1 … depth−1."""
    if not transformer.batch_first:
        raise LabError("Deep prompts need a batch-first open_clip transformer (open_clip ≥ 2.24).")
    for i, block in enumerate(transformer.resblocks):
        if prompts is not None and 1 <= i < prompts.depth:
            n = prompts.length
            x = torch.cat([x[:, :start], prompts.at(i, x.shape[0]).to(x.dtype), x[:, start + n:]], dim=1)
        x = block(x, attn_mask=attn_mask)
    return x


def encode_image(visual, images: torch.Tensor, prompts: DeepPrompts | None = None) -> torch.Tensor:
    """Unnormalised image features of an open_clip ViT, with deep vision prompts if given."""
    if not isinstance(visual, VisionTransformer):
        raise LabError(f"Vision prompts need a ViT image tower, not {type(visual).__name__}; pick a ViT model.")
    _check_depth(prompts, len(visual.transformer.resblocks))
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    length = x.shape[1]
    if prompts is not None:
        x = torch.cat([x, prompts.at(0, x.shape[0]).to(x.dtype)], dim=1)
    x = visual.ln_pre(x)
    x = _run_blocks(visual.transformer, x, prompts, start=length)
    pooled, _ = visual._pool(x[:, :length])
    return pooled @ visual.proj if visual.proj is not None else pooled


def text_tower(model):
    """open_clip keeps the text tower on the CLIP itself, or under ``.text`` (CustomTextCLIP)."""
    tower = getattr(model, "text", model)
    if getattr(tower, "cls_emb", None) is not None:
        raise LabError("Text prompts do not support text towers with a class token (CoCa); pick a CLIP model.")
    return tower


def encode_text(model, tokens: torch.Tensor, prompts: DeepPrompts | None = None) -> torch.Tensor:
    """Unnormalised text features with deep text prompts after SOS (tokens from :func:`prompt_texts`)."""
    tower = text_tower(model)
    return _encode_embedded(tower, tower.token_embedding(tokens), tokens, prompts)


def encode_text_batches(model, *token_batches: torch.Tensor) -> list[torch.Tensor]:
    """Unnormalised text features of several token batches (of any lengths), one token-embedding lookup for all.

    Equal to :func:`encode_text` on each batch. The point is the backward pass: the token
    embedding's gradient is a dense vocabulary × width tensor (49,408 × W), built and
    accumulated once instead of once per batch — for a small text tower that costs more
    than the transformer itself.
    """
    tower = text_tower(model)
    flat = tower.token_embedding(torch.cat([t.flatten() for t in token_batches]))
    embedded = flat.split([t.numel() for t in token_batches])
    return [_encode_embedded(tower, x.view(*t.shape, -1), t) for x, t in zip(embedded, token_batches)]


def _encode_embedded(tower, x: torch.Tensor, tokens: torch.Tensor, prompts: DeepPrompts | None = None) -> torch.Tensor:
    """The text tower after its token embedding: prompts, positions, causal blocks, EOT pooling, projection."""
    _check_depth(prompts, len(tower.transformer.resblocks))
    cast = tower.transformer.get_cast_dtype()
    x = x.to(cast)
    if prompts is not None:
        n = prompts.length
        x = torch.cat([x[:, :1], prompts.at(0, x.shape[0]).to(cast), x[:, 1 + n:]], dim=1)
    length = x.shape[1]
    x = x + tower.positional_embedding[:length].to(cast)
    mask = tower.attn_mask[:length, :length] if tower.attn_mask is not None else None
    x = _run_blocks(tower.transformer, x, prompts, start=1, attn_mask=mask)
    x = tower.ln_final(x)
    pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    eos = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
    x = text_global_pool(x, tokens, pool_type, eos_token_id=eos)
    projection = tower.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def trim_padding(model, tokens: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns after the longest text's EOT, when that cannot change :func:`encode_text`.

    With a causal mask and EOT (argmax) pooling no token attends to later positions,
    so the padding never reaches the pooled feature. Short class prompts ("a photo of
    a red circle.") then cost a fraction of a full-context forward. Other towers get
    their tokens back unchanged.
    """
    tower = text_tower(model)
    pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    if getattr(tower, "attn_mask", None) is None or pool_type != "argmax" or tokens.shape[0] == 0:
        return tokens
    return tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]


def prompt_texts(classnames, length: int) -> list[str]:
    """``"X X X X {class}."``: the placeholders whose embeddings the text prompts replace."""
    return [" ".join([PLACEHOLDER] * length + [f"{c}."]) for c in classnames]


def vision_prompts(visual, length: int, depth: int) -> DeepPrompts:
    """Vision prompts for a ViT tower, ``depth`` limited to its number of blocks."""
    return DeepPrompts(length, min(depth, len(visual.transformer.resblocks)), visual.conv1.out_channels)


def text_prompts_from_words(clip, words: str, depth: int) -> DeepPrompts:
    """Text prompts whose first set starts as the token embeddings of ``words`` (e.g. "a photo of a");
    ``depth`` limited to the text tower's number of blocks."""
    tokens = clip.tokenize([words])[0]
    length = int(tokens.argmax()) - 1  # tokens between SOS and EOT
    tower = text_tower(clip.model)
    prompts = DeepPrompts(length, min(depth, len(tower.transformer.resblocks)), tower.token_embedding.weight.shape[1])
    with torch.no_grad():
        prompts.tokens[0].copy_(tower.token_embedding(tokens[1:1 + length].to(tower.token_embedding.weight.device)))
    return prompts
