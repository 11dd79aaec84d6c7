"""Deep prompts on open_clip towers: exact when off, trainable alone when on."""

import pytest
import torch

from lab.errors import LabError
from lab.models import prompts as P
from lab.models import zoo

MODELS = ["shapes-student", "shapes-teacher", "ViT-B-32"]


@pytest.fixture(scope="module", params=MODELS)
def clip(request):
    torch.manual_seed(0)
    return zoo.load(request.param)


def test_prompts_off_equal_open_clip(clip):
    size = clip.image_size
    images = torch.randn(2, 3, size, size)
    tokens = clip.tokenize(["a photo of a red circle.", "a blue star"])
    with torch.no_grad():
        assert torch.allclose(P.encode_image(clip.model.visual, images), clip.model.encode_image(images), atol=1e-5)
        assert torch.allclose(P.encode_text(clip.model, tokens), clip.model.encode_text(tokens), atol=1e-5)


def test_trimmed_padding_changes_no_text_feature(clip):
    tokens = clip.tokenize(["a photo of a red circle.", "a blue star"])
    trimmed = P.trim_padding(clip.model, tokens)
    assert trimmed.shape[1] == int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]
    with torch.no_grad():
        assert torch.allclose(P.encode_text(clip.model, trimmed), clip.model.encode_text(tokens), atol=1e-5)


def test_text_batches_share_one_lookup_and_change_nothing(clip):
    captions = clip.tokenize(["a photo of a red circle.", "a large blue star on a striped background"])
    classes = P.trim_padding(clip.model, clip.tokenize(["a photo of a red circle.", "a photo of a cross."]))
    clip.model.zero_grad()
    together = P.encode_text_batches(clip.model, captions, classes)
    sum(f.square().sum() for f in together).backward()
    grads_together = {n: p.grad.clone() for n, p in clip.model.named_parameters() if p.grad is not None}
    clip.model.zero_grad()
    apart = [clip.model.encode_text(captions), P.encode_text(clip.model, classes)]
    sum(f.square().sum() for f in apart).backward()
    for a, b in zip(together, apart):
        assert torch.allclose(a, b, atol=1e-5)
    assert "token_embedding.weight" in grads_together or "text.token_embedding.weight" in grads_together
    for name, p in clip.model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads_together[name], p.grad, atol=1e-5), name
    clip.model.zero_grad(set_to_none=True)


def test_only_prompts_receive_gradients(clip):
    clip.model.requires_grad_(False)
    visual = P.DeepPrompts(4, 2, clip.model.visual.conv1.out_channels)
    text = P.text_prompts_from_words(clip, "a photo of a", depth=2)
    images = torch.randn(2, 3, clip.image_size, clip.image_size)
    tokens = clip.tokenize(P.prompt_texts(["red circle", "blue star"], text.length))
    out = P.encode_image(clip.model.visual, images, visual).sum() + P.encode_text(clip.model, tokens, text).sum()
    out.backward()
    assert visual.tokens.grad.abs().sum() > 0 and text.tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.model.parameters())
    clip.model.requires_grad_(True)


def test_prompts_change_outputs_and_text_init_is_the_words(clip):
    text = P.text_prompts_from_words(clip, "a photo of a", depth=1)
    assert text.length == 4
    plain = clip.tokenize(["a photo of a red circle."])
    placeholder = clip.tokenize(P.prompt_texts(["red circle"], 4))
    with torch.no_grad():
        # depth 1, initialised from the words: the prompted placeholder text is the plain sentence
        assert torch.allclose(P.encode_text(clip.model, placeholder, text), clip.model.encode_text(plain), atol=1e-5)
        deep = P.text_prompts_from_words(clip, "a photo of a", depth=2)
        assert not torch.allclose(P.encode_text(clip.model, placeholder, deep), clip.model.encode_text(plain), atol=1e-4)


def test_too_deep_prompts_are_refused():
    clip = zoo.load("shapes-student")
    with pytest.raises(LabError, match="exceeds the tower's 2 blocks"):
        P.encode_image(clip.model.visual, torch.randn(1, 3, 32, 32), P.DeepPrompts(2, 3, 64))
