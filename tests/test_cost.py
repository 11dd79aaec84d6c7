"""What distillation buys: parameters, FLOPs, latency, the ONNX export and the cost-vs-accuracy table."""

import json
import shutil
import math

import pytest
import torch

from lab.bench import cost
from lab.cli import main
from lab.errors import LabError
from lab.models import onnx, zoo


def _hand_flops(cfg: dict) -> tuple[int, int]:
    """2 × the multiply-adds of the linear layers, the patch convolution and attention, from a model config."""
    v, t, embed = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]

    def tower(tokens: int, width: int, layers: int, mlp_ratio: float) -> int:
        per_layer = tokens * width * (3 * width + width + 2 * int(mlp_ratio * width))  # qkv, out, mlp
        per_layer += 2 * tokens * tokens * width  # scores and weighted values, all heads together
        return layers * per_layer + width * embed  # + the projection of the pooled token

    patches = (v["image_size"] // v["patch_size"]) ** 2
    image = patches * 3 * v["patch_size"] ** 2 * v["width"]  # patch embedding convolution
    image += tower(patches + 1, v["width"], v["layers"], v["mlp_ratio"])
    text = tower(t["context_length"], t["width"], t["layers"], 4.0)
    return 2 * image, 2 * text


def test_student_is_cheaper_and_flops_match_a_hand_count():
    student, teacher = zoo.load("shapes-student"), zoo.shipped_teacher()
    s, t = cost.model_cost(student), cost.model_cost(teacher)
    assert s["params"] == student.num_parameters() < t["params"]
    for c in (s, t):
        assert c["image_params"] + c["text_params"] + 1 == c["params"]  # + the logit scale
        assert c["image_flops"] > 0 and c["text_flops"] > 0
    assert t["image_flops"] / s["image_flops"] > 1 and t["text_flops"] / s["text_flops"] > 1
    for arch, c in (("shapes-student", s), ("shapes-teacher", t)):
        image, text = _hand_flops(json.loads((zoo.PRESET_DIR / f"{arch}.json").read_text()))
        assert c["image_flops"] == pytest.approx(image, rel=0.02)
        assert c["text_flops"] == pytest.approx(text, rel=0.02)


def test_latency_is_measured_side_by_side():
    models = {"teacher": zoo.shipped_teacher(), "student": zoo.load("shapes-student")}
    times = cost.latency(models, batch_size=8, device="cpu", rounds=1)
    assert set(times) == {"teacher", "student"}
    for t in times.values():
        assert t.image_s > 0 and t.text_s > 0
        assert t.images_per_s == pytest.approx(8 / t.image_s)
    with pytest.raises(LabError, match="at least 1"):
        cost.latency(models, batch_size=0, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_latency_on_gpu():
    times = cost.latency({"student": zoo.load("shapes-student")}, batch_size=64, device="cuda", rounds=2)
    assert times["student"].image_s > 0 and times["student"].text_s > 0


def test_onnx_export_matches_pytorch(tmp_path):
    result = onnx.export_onnx(zoo.load("shapes-student"), tmp_path / "onnx")
    for name in ("image_encoder", "text_encoder"):
        assert (tmp_path / "onnx" / f"{name}.onnx").stat().st_size == result[name]["bytes"] > 0
        assert result[name]["max_abs_diff"] <= onnx.ONNX_TOLERANCE
    assert result["max_abs_diff"] <= 1e-4 and result["items"] == 8


def test_cost_table_puts_accuracy_beside_cost(smoke_run, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(smoke_run, root / "smoke")  # a copy: a link out of the runs root is not listed
    (root / "unfinished").mkdir()  # no summary: not a row
    (root / "unfinished" / "config.json").write_text(json.dumps({"kind": "distill", "seed": 0, "config": {}}))
    (root / "_tables").mkdir()
    rows, markdown = cost.cost_table(root, device="cpu", batch_size=8, rounds=1)
    assert [r["run"] for r in rows] == ["teacher", "smoke"]
    teacher, smoke = rows
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert smoke["hm"] == summary["hm"] and smoke["top1"] == summary["top1"]
    assert teacher["hm"] > 90  # the shipped teacher's card
    assert smoke["params"] < teacher["params"] and smoke["image_flops"] < teacher["image_flops"]
    assert math.isclose(smoke["image_speedup"], teacher["latency_image_s"] / smoke["latency_image_s"])
    assert "| teacher | teacher |" in markdown and f"| smoke | pretrain | {smoke['params'] / 1e6:.2f} |" in markdown
    assert f"{summary['hm']:.1f}" in markdown


def test_cli_prints_the_table_and_json(smoke_run, capsys):
    args = ["cost", "--runs-dir", str(smoke_run.parent), "--device", "cpu", "--batch-size", "8", "--rounds", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("Cost vs accuracy (batch 8, cpu") and "| smoke | pretrain |" in out
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in report["rows"]] == ["teacher", "smoke"] and report["onnx"] is None


def test_cli_bad_inputs_fail_with_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["cost", "--runs-dir", str(tmp_path), "--onnx", str(blocker / "onnx")]) == 2
    err = capsys.readouterr().err
    assert "Cannot write the ONNX files to" in err and "pass a directory you can write to" in err
    assert "Traceback" not in err
    assert main(["cost", "--runs-dir", str(tmp_path / "nope")]) == 2
    assert "Runs directory" in capsys.readouterr().err
    assert main(["cost", "--runs-dir", str(tmp_path), "--device", "cpu"]) == 2  # no runs in it
    assert "holds no finished student run" in capsys.readouterr().err


def test_architecture_from_the_checkpoint_when_the_config_names_a_file(smoke_run, tmp_path):
    from lab import runs

    run = tmp_path / "from-file"
    run.mkdir()
    config = json.loads((smoke_run / "config.json").read_text())
    config["config"]["model"] = str(tmp_path / "some-weights.safetensors")
    (run / "config.json").write_text(json.dumps(config))
    (run / "checkpoints").symlink_to(smoke_run / "checkpoints", target_is_directory=True)
    assert cost._run_arch(runs.read_run(run)) == "shapes-student"
    (run / "checkpoints").unlink()
    assert cost._run_arch(runs.read_run(run)) is None  # no checkpoint: not a student row
