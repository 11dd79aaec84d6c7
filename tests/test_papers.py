import pytest

from lab.experiments import papers
from lab.errors import LabError


def test_every_table_parses_and_is_listed_in_sources():
    sources = (papers.PAPERS_DIR / "SOURCES.md").read_text(encoding="utf-8")
    assert len(papers.TABLES) >= 10
    for name, path in papers.TABLES.items():
        rows = papers.load(name)
        assert rows and "value" in rows[0], name
        assert all(r["value"] is None or isinstance(r["value"], float) for r in rows), name
        assert f"`{path.name}`" in sources, name


def test_clipkd_table1():
    expected = {"teacher": 37.0, "student": 30.6, "+CRD": 31.9, "+FD": 34.2, "+MFD": 34.1, "+GD": 31.5,
                "+ICL": 33.1, "+AFD": 31.4, "+FD+ICL": 34.6, "+FD+ICL+CRD": 34.9}
    for method, top1 in expected.items():
        assert papers.value("clipkd_table1", method=method, metric="imagenet") == top1
    assert papers.value("clipkd_table1", method="student", metric="flickr_t2i") == 47.7


def test_clipkd_table5_and_cliprd():
    kd = dict(method="CLIP-KD", metric="imagenet")
    assert papers.value("clipkd_table5", model="ViT-B/16", **kd) == 57.5
    assert papers.value("clipkd_table5", model="ViT-T/16", teacher="ViT-B/16", **kd) == 42.6
    assert papers.value("clipkd_table5", model="RN-50", **kd) == 55.4
    for method, top1 in {"student": 29.3, "CLIP-KD*": 41.3, "CLIP-RD": 42.1}.items():
        assert papers.value("cliprd_table", method=method, metric="imagenet") == top1


def test_comkd_tables():
    assert papers.value("comkd_table2_cross", method="ComKD-CLIP", dataset="Average") == 72.07
    assert papers.value("comkd_table2_cross", method="PromptKD", dataset="Average") == 71.33
    assert papers.value("comkd_table3_domain", method="ComKD-CLIP", dataset="Average") == 72.78
    assert papers.value("comkd_table3_domain", method="PromptKD", dataset="Average") == 71.47
    aligns = ("L_align", "L_align_mean", "L_align_var")
    hm = {a: papers.value("comkd_table5_alignment", alignment=a, metric="hm") for a in aligns}
    assert hm == {"L_align": 82.93, "L_align_mean": 82.87, "L_align_var": 82.52}
    hm = {k: papers.value("comkd_table6_refinement", kd_loss=k, metric="hm") for k in ("KL", "MSE", "L1")}
    assert hm == {"KL": 82.93, "MSE": 64.73, "L1": 62.29}
    assert all(r["value"] is None for r in papers.load("comkd_table4_modules"))  # body missing in the source


def test_promptkd_tables():
    avg = [papers.value("promptkd_base2novel", method="PromptKD", dataset="Average", metric=m)
           for m in ("base", "novel", "hm")]
    assert avg == [86.96, 80.73, 83.73]
    losses = ("logit KL", "feature L1", "feature MSE")
    hm = {loss: papers.value("promptkd_ablation", loss=loss, metric="hm") for loss in losses}
    assert hm == {"logit KL": 76.22, "feature L1": 69.35, "feature MSE": 68.91}
    assert papers.value("promptkd_ablation", loss="feature L1", metric="base") is None


def test_errors_name_the_fix():
    with pytest.raises(LabError, match="no paper table 'nope'; choose one of: .*clipkd_table1"):
        papers.load("nope")
    with pytest.raises(LabError, match="2 rows"):
        papers.value("clipkd_table5", method="CLIP-KD", model="ViT-T/16", metric="imagenet")
    with pytest.raises(LabError, match="No row"):
        papers.value("clipkd_table1", method="+XYZ", metric="imagenet")
    with pytest.raises(LabError, match="no column 'dataset'"):
        papers.value("clipkd_table1", dataset="ImageNet")
