"""`splitattn demo`: the zoo at a glance and one real photo through ResNeSt-50.

Until the training system lands, this is what ``make demo`` runs.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import torch
from PIL import Image

from .data.transforms import create_transform
from .inference import imagenet_categories
from .models.factory import create_model
from .models.info import measure
from .models.weights import cache_dir
from .models.zoo import get_entry, list_models
from .report import entry_report, zoo_table


def sample_photos() -> list[Path]:
    """Real labelled ImageNet photos shipped in the ``foolbox`` wheel (``imagenet_<i>_<class id>.jpg``)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return sorted(folder.glob("imagenet_*_*.jpg"))


def run_demo(model_name: str = "resnest50", image: str | None = None) -> None:
    entry = get_entry(model_name)
    print("== The splitattn zoo ==")
    print(zoo_table(list_models()))
    print()

    photos = [Path(image)] if image else sample_photos()
    if not photos:
        raise SystemExit("no photo given and the foolbox sample photos are not installed: "
                         "run `make demo` (it installs them) or pass --image PATH")
    photo = photos[0]
    label_match = re.search(r"imagenet_\d+_(\d+)\.", photo.name)
    categories = imagenet_categories()

    cached = entry.checkpoint and (cache_dir() / entry.checkpoint.filename).is_file()
    model = create_model(entry.name, pretrained=bool(cached), progress=False).eval()
    print(f"== {entry.name} on a real photo ==")
    if cached:
        print(f"weights: released checkpoint {cache_dir() / entry.checkpoint.filename}")
    else:
        where = cache_dir() / entry.checkpoint.filename if entry.checkpoint else "-"
        print(f"weights: RANDOM initialisation (no checkpoint at {where}; `splitattn download {entry.name}` "
              "fetches it when online), so the classes below are meaningless; the pipeline is real.")
    transform = create_transform(entry)
    with Image.open(photo) as img:
        print(f"image: {photo} ({img.size[0]}×{img.size[1]} {img.mode})"
              + (f", true class {label_match.group(1)} '{categories[int(label_match.group(1))]}'"
                 if label_match else ""))
        batch = transform(img).unsqueeze(0)
    print(f"transform: {transform.transforms[1]}")
    with torch.inference_mode():
        model(batch)  # warm-up
        start = time.perf_counter()
        logits = model(batch)
        elapsed = time.perf_counter() - start
    probs = logits.softmax(-1)[0]
    top = probs.topk(5)
    print(f"forward: {tuple(batch.shape)} -> {tuple(logits.shape)} in {elapsed * 1e3:.0f} ms "
          f"on {torch.get_num_threads()} CPU threads")
    for p, idx in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {p:6.2%}  {idx:4d} {categories[idx]}")
    print()

    got = measure(entry.name)
    print("== Size against the paper ==")
    print(entry_report(entry.name, got))
    print()

    print("== Feature pyramid (features_only=True) at 224 px ==")
    for output_stride in (32, 8):
        backbone = create_model(entry.name, features_only=True, output_stride=output_stride).eval()
        with torch.inference_mode():
            feats = backbone(torch.zeros(1, 3, 224, 224))
        desc = ", ".join(f"C{i + 2} {tuple(f.shape[1:])} /{info['reduction']}"
                         for i, (f, info) in enumerate(zip(feats, backbone.feature_info)))
        print(f"  output_stride {output_stride:>2}: {desc}")
