"""Benchmark evaluation on real data, in clip_benchmark's metric definitions and output format.

``python -m lab eval MODEL --benchmark SPEC`` with SPEC one of

* ``classify:FOLDER`` — a class-folder dataset (``FOLDER/<class>/<image>``; ``--classnames FILE``
  gives one readable name per line, in sorted folder order);
* ``classify:SPLIT.json:IMAGE_ROOT`` — a CoOp split file (its ``--split``, default ``test``);
* ``retrieval:FILE.json`` — an image–caption set with several captions per image, COCO/Flickr
  style: a list of ``{"image": path, "captions": [...]}`` or Karpathy's ``{"images": [{"filename",
  "sentences": [{"raw"}], "split"}]}`` (paths relative to the file).

Zero-shot classification uses the OpenAI prompt templates (ImageNet's 80, ``--templates openai``;
``simple`` for open_clip's 7, or ``lab`` for ShapesWorld's) and reports clip_benchmark's
``acc1``, ``acc5`` and ``mean_per_class_recall`` (balanced accuracy). Retrieval reports
``image_retrieval_recall@K`` (text → image: a caption's image among the K nearest images) and
``text_retrieval_recall@K`` (image → text: any of the image's captions among its K nearest
captions) for K = 1, 5, 10. Numbers are fractions in [0, 1], as clip_benchmark writes them, in its
JSON record ``{"dataset", "model", "pretrained", "task", "metrics", "language"}``.
The lab computes these itself (no clip_benchmark import at run time, so a model or data layout
clip_benchmark does not know still evaluates); clip_benchmark 1.6.2 is pinned in requirements.txt and
the tests check the numbers agree with its own functions, offline, to 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lab.data.files import class_folder, read_json_file, split_file
from lab.errors import LabError
from lab.eval.zeroshot import class_embeddings

TEMPLATE_SETS = ("openai", "simple", "lab")
RECALL_K = (1, 5, 10)


def templates(name: str) -> list[str]:
    """Prompt templates as format strings with one ``{}`` for the class name."""
    if name == "lab":
        from lab.data.shapes import PROMPT_TEMPLATES

        return list(PROMPT_TEMPLATES)
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    chosen = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}.get(name)
    if chosen is None:
        raise LabError(f"Unknown --templates '{name}'; choose one of: {', '.join(TEMPLATE_SETS)}.")
    return [t("{}") for t in chosen]


# --------------------------------------------------------------------------- the metrics


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """clip_benchmark's zero-shot metrics: top-1, top-5 (when there are 5 classes) and mean per-class recall."""
    labels = torch.as_tensor(labels)
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    metrics = {"acc1": hits[:, 0].float().mean().item()}
    if logits.shape[1] >= 5:
        metrics["acc5"] = hits.any(dim=1).float().mean().item()
    predicted = ranked[:, 0]
    recalls = [(predicted[labels == c] == c).float().mean().item() for c in labels.unique().tolist()]
    metrics["mean_per_class_recall"] = float(np.mean(recalls))
    return metrics


def retrieval_metrics(image_feats: torch.Tensor, text_feats: torch.Tensor, text_image: torch.Tensor,
                      ks=RECALL_K) -> dict[str, float]:
    """Recall@K both ways; ``text_image[t]`` is the index of caption t's image (several captions per image)."""
    scores = text_feats.float() @ image_feats.float().T  # (texts, images)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(text_image)), text_image] = True
    metrics = {}
    for k in ks:
        k_images, k_texts = min(k, scores.shape[1]), min(k, scores.shape[0])
        top_images = scores.topk(k_images, dim=1).indices  # per caption
        metrics[f"image_retrieval_recall@{k}"] = positive.gather(1, top_images).any(dim=1).float().mean().item()
        top_texts = scores.T.topk(k_texts, dim=1).indices  # per image
        metrics[f"text_retrieval_recall@{k}"] = positive.T.gather(1, top_texts).any(dim=1).float().mean().item()
    return metrics


# --------------------------------------------------------------------------- datasets and runs


@dataclass
class RetrievalSet:
    paths: list[Path]
    captions: list[str]
    text_image: list[int]


def karpathy_items(images, path: Path, split: str) -> list[dict]:
    """Karpathy's ``images`` list as ``{"image", "captions"}`` items of one split; a malformed entry is one sentence."""
    if not isinstance(images, list):
        raise LabError(f"Retrieval file {path}'s \"images\" is not a list; it must hold Karpathy's image entries.")
    items = []
    for i, entry in enumerate(images):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise LabError(f"Entry {i} of {path}'s \"images\" has no \"filename\"; fix that entry.")
        if entry.get("split", split) != split:
            continue
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and "raw" in s for s in sentences):
            raise LabError(f"Entry {i} of {path}'s \"images\" ({entry['filename']}) has no \"sentences\" list of "
                           f"{{\"raw\": caption}}; add its captions or remove it.")
        items.append({"image": str(Path(entry.get("filepath", "")) / entry["filename"]),
                      "captions": [s["raw"] for s in sentences]})
    return items


def retrieval_set(path: str | Path, split: str = "test") -> RetrievalSet:
    """An image–caption file with several captions per image (see the module docstring)."""
    path = Path(path)
    data = read_json_file(path, "Retrieval file")
    if isinstance(data, dict) and "images" in data:  # Karpathy's dataset_coco.json / dataset_flickr30k.json
        items = karpathy_items(data["images"], path, split)
    elif isinstance(data, list):
        items = data
    else:
        raise LabError(f"Retrieval file {path} must be a list of {{\"image\", \"captions\"}} or Karpathy's "
                       f"{{\"images\": [...]}} layout.")
    paths, captions, text_image = [], [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise LabError(f"Item {i} of {path} is not an {{\"image\": PATH, \"captions\": [...]}} object "
                           f"(got {type(item).__name__}); fix that item.")
        if not item.get("captions"):
            raise LabError(f"Item {i} of {path} ({item.get('image')}) has no captions; add some or remove it.")
        paths.append(path.parent / item["image"])
        captions += list(item["captions"])
        text_image += [i] * len(item["captions"])
    if not paths:
        raise LabError(f"Retrieval file {path} holds no images (split '{split}'); check the file.")
    return RetrievalSet(paths, captions, text_image)


@torch.no_grad()
def encode_captions(clip, captions: list[str], batch_size: int = 512) -> torch.Tensor:
    clip.model.eval()
    feats = [clip.model.encode_text(clip.tokenize(captions[i:i + batch_size])).float().cpu()
             for i in range(0, len(captions), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


class ImageFiles(torch.utils.data.Dataset):
    """Image files through open_clip's own eval preprocess for the model (:func:`lab.data.preprocess.model_transform`)."""

    def __init__(self, paths, transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB"))
        except FileNotFoundError as err:
            raise LabError(f"Image {self.paths[i]} does not exist; fix the path or remove it.") from err
        except OSError as err:
            raise LabError(f"Image {self.paths[i]} cannot be read ({err}); replace the file or remove it.") from err


@torch.no_grad()
def encode_image_files(clip, paths, batch_size: int = 256, workers: int = 0) -> torch.Tensor:
    """Normalised image embeddings of image files, streamed: a DataLoader (``workers`` processes) decodes and
    preprocesses one batch at a time, so an ImageNet-size set never sits in memory as one array."""
    from lab.data.preprocess import model_transform

    clip.model.eval()
    loader = torch.utils.data.DataLoader(ImageFiles(paths, model_transform(clip)), batch_size=batch_size,
                                         num_workers=workers, shuffle=False)
    feats = [clip.model.encode_image(x.to(clip.device)).float().cpu() for x in loader]
    return F.normalize(torch.cat(feats), dim=-1)


def parse_spec(spec: str) -> tuple[str, list[str]]:
    task, _, rest = spec.partition(":")
    if task not in ("classify", "retrieval") or not rest:
        raise LabError(f"--benchmark {spec!r} must be classify:FOLDER, classify:SPLIT.json:IMAGE_ROOT or "
                       f"retrieval:FILE.json.")
    return task, rest.split(":")


def run_benchmark(clip, spec: str, classnames_file: str = "", template_set: str = "openai", split: str = "test",
                  batch_size: int = 256, workers: int = 0) -> dict:
    """One benchmark: clip_benchmark's JSON record (``metrics`` holds the numbers)."""
    task, parts = parse_spec(spec)
    if task == "classify":
        if len(parts) == 1:
            names = None
            if classnames_file:
                lines = [line.strip() for line in Path(classnames_file).read_text().splitlines() if line.strip()]
                folders = sorted(d.name for d in Path(parts[0]).iterdir() if d.is_dir()) if Path(parts[0]).is_dir() else []
                if len(lines) != len(folders):
                    raise LabError(f"{classnames_file} names {len(lines)} classes but {parts[0]} has {len(folders)} "
                                   f"class folders; give one name per folder, in sorted folder order.")
                names = dict(zip(folders, lines))
            data = class_folder(parts[0], clip.image_size, names)
        else:
            data = split_file(parts[0], parts[1], split, clip.image_size)
        images = encode_image_files(clip, data.paths, batch_size, workers)
        weights = class_embeddings(lambda texts: encode_captions(clip, texts, batch_size), data.classnames,
                                   templates(template_set))
        metrics = classification_metrics(images @ weights.T, torch.as_tensor(data.labels))
        record_task, dataset = "zeroshot_classification", parts[0]
    else:
        data = retrieval_set(parts[0], split)
        images = encode_image_files(clip, data.paths, batch_size, workers)
        metrics = retrieval_metrics(images, encode_captions(clip, data.captions, batch_size),
                                    torch.as_tensor(data.text_image))
        record_task, dataset = "zeroshot_retrieval", parts[0]
    arch, _, pretrained = clip.source.partition(":")
    return {"dataset": Path(dataset).stem, "model": clip.arch, "pretrained": pretrained or clip.source,
            "task": record_task, "metrics": metrics, "language": "en"}


def read_classnames(path: str | Path) -> list[str]:
    """A class-names file: one name per line (blank lines ignored)."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError as err:
        raise LabError(f"eval.classnames file {path} does not exist; check the path.") from err
    if not names:
        raise LabError(f"eval.classnames file {path} holds no class names; write one name per line.")
    return names


def training_classnames(source: str, classnames_file: str, specs: list[str], shapes_names) -> list[str]:
    """The class names a term that reads classes (Hinton KD) uses: ShapesWorld's on ShapesWorld; on real data
    ``eval.classnames``, else the first ``classify:FOLDER`` benchmark's folders — never ShapesWorld's."""
    if source == "shapes":
        return list(shapes_names)
    if classnames_file:
        return read_classnames(classnames_file)
    for spec in specs:
        task, parts = parse_spec(spec)
        if task == "classify" and len(parts) == 1:
            return [d.name.replace("_", " ") for d in sorted(Path(parts[0]).iterdir()) if d.is_dir()]
    raise LabError("The kd term needs the class names of your data; pass eval.classnames=FILE (one name per line) "
                   "or a classify:FOLDER benchmark in eval.benchmarks.")


def summary_metrics(records: list[dict]) -> dict[str, float]:
    """``benchmark/<dataset>/<metric>`` keys for a run's summary.json."""
    return {f"benchmark/{r['dataset']}/{k}": v for r in records for k, v in r["metrics"].items()}


def benchmark_specs(text: str) -> list[str]:
    """``eval.benchmarks`` (specs joined by ``;``), each checked to exist before any training."""
    specs = [s.strip() for s in text.split(";") if s.strip()]
    for spec in specs:
        _, parts = parse_spec(spec)
        for part in parts:
            if not Path(part).exists():
                raise LabError(f"eval.benchmarks names {part}, which does not exist; fix the path in {spec!r}.")
    return specs
