import os

import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from lab.errors import LabError
from lab.models import zoo


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return zoo.load("shapes-student")


def test_presets_are_real_open_clip_models(student):
    assert set(zoo.PRESETS) >= {"shapes-teacher", "shapes-student"}
    assert isinstance(student.model, open_clip.CLIP)
    assert isinstance(student.tokenizer, SimpleTokenizer)
    tokens = student.tokenize(["a photo of a red circle."])
    assert tokens.shape == (1, 20)
    assert torch.equal(tokens[0], open_clip.tokenize(["a photo of a red circle."], context_length=20)[0])
    feats = student.model.encode_image(student.image_tensor(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)))
    assert feats.shape == (2, student.embed_dim)


def test_images_of_another_size_are_resized_to_the_model_input(student):
    images = torch.full((2, 64, 64, 3), 255, dtype=torch.uint8)
    x = student.image_tensor(images)
    assert x.shape == (2, 3, 32, 32)
    white = student.image_tensor(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8))
    assert torch.allclose(x[0], white[0], atol=1e-5)  # resizing a flat image changes no value


def test_weights_round_trip(student, tmp_path):
    path = zoo.save_weights(student, tmp_path / "s.safetensors")
    again = zoo.load(str(path))
    tokens = student.tokenize(["a blue star."])
    with torch.no_grad():
        assert torch.allclose(student.model.encode_text(tokens), again.model.encode_text(tokens))
    assert again.arch == "shapes-student"


def test_open_clip_state_dict_with_architecture(student, tmp_path):
    torch.save(student.model.state_dict(), tmp_path / "plain.pt")
    again = zoo.load(f"shapes-student:{tmp_path / 'plain.pt'}")
    assert torch.equal(again.model.logit_scale, student.model.logit_scale)


def test_wrong_architecture_is_a_clear_error(student, tmp_path):
    path = zoo.save_weights(student, tmp_path / "s.safetensors")
    with pytest.raises(LabError, match="does not match architecture shapes-teacher"):
        zoo.load_weights(path, arch="shapes-teacher")


def test_bad_specs_are_explained(tmp_path):
    with pytest.raises(LabError, match="Unknown model architecture 'shapes-giant'"):
        zoo.load("shapes-giant")
    with pytest.raises(LabError, match="does not exist"):
        zoo.load(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(LabError, match="Cannot read weights file"):
        zoo.load(str(tmp_path / "junk.safetensors"))
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(LabError, match="corrupt or not a safe"):
        zoo.load(str(tmp_path / "junk.pt"))
    with pytest.raises(LabError, match="holds no checkpoint"):
        zoo.load(str(tmp_path))


def test_missing_pretrained_weights_offline_is_one_clear_error():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(LabError, match="not available offline.*ViT-B-32:/path/to/weights.pt"):
        zoo.load("ViT-B-32:laion2b_s34b_b79k")
    with pytest.raises(LabError, match="neither a file nor a pretrained tag"):
        zoo.load("ViT-B-32:no-such-tag")
