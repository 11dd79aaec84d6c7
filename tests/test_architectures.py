"""Every open_clip architecture family as a student and as a teacher: 2 distillation steps each.

open_clip's 144 configs fall into a few families by the classes they build: ``CLIP`` with a ViT,
a ModifiedResNet or a timm trunk, and ``CustomTextCLIP`` with a timm FastViT (MobileCLIP), a SigLIP
ViT and a logit bias, an EVA-02 or a PE-Core trunk (timm's Eva), CoCa (its own class) and Hugging
Face text towers (roberta, mt5/nllb). Their smallest members are still 40M–400M parameters, so each
family is built here in miniature: the family's own open_clip config with small widths and depths,
and for a timm trunk the family's own timm model function with small overrides (registered below).
The open_clip and timm classes, pooling, logit bias and tokenizer paths are the real ones.

The Hugging Face families need a tokenizer and a model config on disk: offline these are written
here (a word-level tokenizer and a tiny RobertaConfig / MT5Config), as a user points the config's
``hf_model_name`` / ``hf_tokenizer_name`` at a local folder.
"""

from __future__ import annotations

import json

import open_clip
import pytest
import timm
from timm.models import register_model

from lab.errors import LabError
from lab.models import zoo
from lab.train.distill import default_config, distill

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def _timm(base: str, **small):
    """A timm model function: the family's own model with small overrides."""
    def build(pretrained=False, **kwargs):
        return timm.create_model(base, pretrained=False, **{**small, **kwargs})
    build.__name__ = f"lab_tiny_{base}"
    return build


TIMM = {
    "lab_tiny_fastvit_mci0": _timm("fastvit_mci0", layers=(1, 1, 1, 1)),
    "lab_tiny_convnext": _timm("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "lab_tiny_siglip": _timm("vit_base_patch16_siglip_224", img_size=32, embed_dim=32, depth=1, num_heads=2),
    "lab_tiny_eva02": _timm("eva02_base_patch16_clip_224", img_size=32, embed_dim=32, depth=1, num_heads=2),
    "lab_tiny_pe_core": _timm("vit_pe_core_tiny_patch16_384", img_size=32, embed_dim=32, depth=1, num_heads=2,
                              attn_pool_num_heads=2, ref_feat_shape=(2, 2)),
}
for _name, _fn in TIMM.items():
    _fn.__name__ = _name
    _fn.__module__ = __name__
    if _name not in timm.list_models(_name):
        register_model(_fn)


def _vit(**extra):
    return {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16, **extra}


def _timm_vision(name, pool="avg", proj="linear", size=32):
    return {"timm_model_name": name, "timm_model_pretrained": False, "timm_pool": pool, "timm_proj": proj,
            "image_size": size}


def families(tokenizer_dir, hf_dirs) -> dict[str, dict]:
    """One miniature open_clip config per family (the real config's keys, small sizes)."""
    hf_text = {"context_length": 16, "vocab_size": 64, "hf_tokenizer_name": str(tokenizer_dir)}
    return {
        "clip-vit": {"embed_dim": 16, "vision_cfg": _vit(), "text_cfg": TEXT},
        "clip-resnet": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
                        "text_cfg": TEXT},
        "clip-timm-convnext": {"embed_dim": 16, "vision_cfg": _timm_vision("lab_tiny_convnext", "avg", "linear"),
                               "text_cfg": TEXT},
        "mobileclip": {"embed_dim": 16, "custom_text": True,
                       "vision_cfg": _timm_vision("lab_tiny_fastvit_mci0", "avg", None, size=64),
                       "text_cfg": {**TEXT, "no_causal_mask": True}},
        "siglip": {"embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
                   "vision_cfg": _timm_vision("lab_tiny_siglip", "map", "none"),
                   "text_cfg": {**hf_text, "width": 32, "heads": 2, "layers": 1, "no_causal_mask": True,
                                "proj_bias": True, "pool_type": "last"}},
        "eva02": {"embed_dim": 16, "custom_text": True, "vision_cfg": _timm_vision("lab_tiny_eva02", "token"),
                  "text_cfg": TEXT},
        "pe-core": {"embed_dim": 16, "custom_text": True, "vision_cfg": _timm_vision("lab_tiny_pe_core", "map", None),
                    "text_cfg": TEXT},
        "coca": {"embed_dim": 16, "custom_text": True,
                 "vision_cfg": _vit(attentional_pool=True, attn_pooler_heads=2, output_tokens=True),
                 "text_cfg": {**TEXT, "embed_cls": True, "output_tokens": True},
                 "multimodal_cfg": {**TEXT, "attn_pooler_heads": 2}},
        "hf-roberta": {"embed_dim": 16, "custom_text": True, "vision_cfg": _vit(),
                       "text_cfg": {**hf_text, "hf_model_name": str(hf_dirs["roberta"]), "hf_pooler_type": "mean_pooler",
                                    "hf_proj_type": "mlp"}},
        "hf-mt5": {"embed_dim": 16, "custom_text": True, "vision_cfg": _vit(),
                   "text_cfg": {**hf_text, "hf_model_name": str(hf_dirs["mt5"]), "hf_pooler_type": "mean_pooler",
                                "hf_proj_type": "linear"}},
    }


def _write_tokenizer(folder):
    """A word-level Hugging Face tokenizer of the ShapesWorld captions' words (64 ids), saved as files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ("a photo of the small large red green blue yellow purple orange circle square triangle star "
             "cross heart ring diamond on in with and dark light bright striped dotted plain").split()
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>") \
        .save_pretrained(folder)


def _write_hf_configs(root) -> dict:
    from transformers import MT5Config, RobertaConfig

    small = {"vocab_size": 64}
    configs = {"roberta": RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=40, pad_token_id=0, **small),
               "mt5": MT5Config(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2, pad_token_id=0, **small)}
    dirs = {}
    for name, config in configs.items():
        config.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


@pytest.fixture(scope="module")
def archs(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    _write_tokenizer(root / "tokenizer")
    configs = families(root / "tokenizer", _write_hf_configs(root))
    folder = root / "configs"
    folder.mkdir()
    for name, config in configs.items():
        (folder / f"lab-tiny-{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return {name: f"lab-tiny-{name}" for name in configs}


STEPS = ["train.steps=2", "train.batch_size=4", "data.size=8", "train.warmup=1", "train.log_every=1",
         "eval.per_style=0", "teacher_mode=online", "loss=crd+fd+icl"]
FAMILIES = ["clip-vit", "clip-resnet", "clip-timm-convnext", "mobileclip", "siglip", "eva02", "pe-core", "coca",
            "hf-roberta", "hf-mt5"]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_distils_as_student_and_as_teacher(archs, family, tmp_path):
    arch = archs[family]
    clip = zoo.create(arch)
    assert clip.embed_dim == open_clip.get_model_config(arch)["embed_dim"]
    if family == "siglip":  # SigLIP-style models keep their bias (softmax terms are unchanged by it)
        assert clip.logit_bias is not None
    other = archs["clip-vit"]  # the cheapest partner: the miniature ViT CLIP
    for role in ("student", "teacher"):
        models = {"student": arch, "teacher": other} if role == "student" else {"student": other, "teacher": arch}
        path = distill(default_config([*STEPS, f"student={models['student']}", f"teacher={models['teacher']}"]),
                       f"{family}-{role}", tmp_path)
        summary = json.loads((path / "summary.json").read_text())
        assert summary["steps"] == 2


def test_hf_tokenizer_absent_offline_is_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabError, match="tokenizer files of ViT-B-16-SigLIP2 .* not available offline"):
        zoo.create("ViT-B-16-SigLIP2")


def test_mfd_on_a_non_vit_student_is_refused_before_training(archs, tmp_path):
    with pytest.raises(LabError, match="mfd term masks ViT patch tokens.*ModifiedResNet"):
        distill(default_config([*STEPS, "loss=mfd", f"student={archs['clip-resnet']}", f"teacher={archs['clip-vit']}"]),
                "mfd", tmp_path)
    assert not (tmp_path / "mfd").exists()
