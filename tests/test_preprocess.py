"""The lab's image tensors are open_clip's preprocess's, and its benchmark accuracy is clip_benchmark's,
on images of odd sizes (where a rounded resize or a floored crop offset would differ)."""

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lab.data.files import load_image
from lab.data.shapes import ShapesWorld, StreamSpec
from lab.eval.benchmarks import run_benchmark, templates
from lab.models import zoo

ODD = [(152, 96), (97, 131), (33, 47)]


@pytest.mark.parametrize("size", [224, 32])
def test_lab_tensors_equal_open_clips_preprocess_on_odd_sizes(tmp_path, size):
    rng = np.random.default_rng(0)
    preprocess = open_clip.image_transform(size, is_train=False)  # open_clip's eval transform (CLIP's mean/std)
    clip = zoo.create("shapes-student")
    clip.model.visual.image_size = size  # image_tensor reads the size and the normalisation from the model
    for w, h in ODD:
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        ours = clip.image_tensor(load_image(path, size)[None])[0]
        with Image.open(path) as im:
            theirs = preprocess(im)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_benchmark_accuracy_equals_clip_benchmarks_on_odd_sizes(tmp_path):
    from clip_benchmark.metrics import zeroshot_classification as zeroshot
    from torchvision.datasets import ImageFolder

    items = ShapesWorld(64).sample(StreamSpec(seed=3, split="test", styles=("plain",)), 0, 240)
    colours = np.asarray(items.factors["colour"])
    names = ["red", "green", "blue", "yellow"]
    for c, name in enumerate(names):
        (tmp_path / "classes" / name).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(colours == c)[:6]):
            w, h = ODD[j % len(ODD)]
            Image.fromarray(items.images[i]).resize((w, h), Image.BILINEAR).save(tmp_path / "classes" / name / f"{j}.png")
    ours = run_benchmark(zoo.shipped_teacher(), f"classify:{tmp_path / 'classes'}", template_set="simple",
                         batch_size=5, workers=1)["metrics"]
    # clip_benchmark's way: open_clip's own model and preprocess, a torchvision ImageFolder
    model, _, preprocess = open_clip.create_model_and_transforms("shapes-teacher", pretrained=str(zoo.SHIPPED_TEACHER))
    model.eval()
    dataset = ImageFolder(str(tmp_path / "classes"), transform=preprocess)
    classifier = zeroshot.zero_shot_classifier(model, open_clip.get_tokenizer("shapes-teacher"), dataset.classes,
                                               [t.replace("{}", "{c}") for t in templates("simple")], "cpu", amp=False)
    logits, target = zeroshot.run_classification(model, classifier, torch.utils.data.DataLoader(dataset, batch_size=7),
                                                 "cpu", amp=False)
    assert ours["acc1"] == pytest.approx((logits.argmax(dim=1) == target).float().mean().item(), abs=1e-9)
