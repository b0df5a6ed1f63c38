"""`splitattn demo`: the zoo at a glance and one real photo through a model (ResNeSt-50 by default)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .classification.inference import imagenet_categories
from .data.images import open_image
from .data.sample_photos import sample_photos
from .data.transforms import create_transform
from .models.factory import create_model
from .models.info import measure
from .models.weights import cache_dir
from .models.zoo import get_entry, list_models
from .report import entry_report, zoo_table

DEFAULT_PHOTO = "chelsea.jpg"  # a tabby cat (CC0; data/photos/README.md)


def run_demo(model_name: str = "resnest50", image: str | None = None, device: torch.device | str = "cpu") -> None:
    entry = get_entry(model_name)
    device = torch.device(device)
    print("== The splitattn zoo ==")
    print(zoo_table(list_models()))
    print()

    sample = next(p for p in sample_photos() if p.path.name == DEFAULT_PHOTO)
    photo, true_class = (Path(image), None) if image else (sample.path, sample.imagenet_class)
    categories = imagenet_categories()

    cached = entry.checkpoint and (cache_dir() / entry.checkpoint.filename).is_file()
    model = create_model(entry.name, pretrained=bool(cached), progress=False).eval().to(device)
    print(f"== {entry.name} on a real photo ==")
    if cached:
        print(f"weights: released checkpoint {cache_dir() / entry.checkpoint.filename}")
    else:
        where = cache_dir() / entry.checkpoint.filename if entry.checkpoint else "-"
        print(f"weights: RANDOM initialisation (no checkpoint at {where}; `splitattn download {entry.name}` "
              "fetches it when online), so the classes below are meaningless; the pipeline is real.")
    transform = create_transform(entry)
    img = open_image(photo)
    print(f"image: {photo} ({img.size[0]}×{img.size[1]})"
          + (f", true class {true_class} '{categories[true_class]}'" if true_class is not None else ""))
    batch = transform(img).unsqueeze(0).to(device)
    print(f"transform: {transform.transforms[1]}")
    with torch.inference_mode():
        model(batch)  # warm-up
        start = time.perf_counter()
        logits = model(batch)
        elapsed = time.perf_counter() - start
    probs = logits.softmax(-1)[0].cpu()
    top = probs.topk(5)
    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else str(device)
    print(f"forward: {tuple(batch.shape)} -> {tuple(logits.shape)} in {elapsed * 1e3:.0f} ms on {where}")
    for p, idx in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {p:6.2%}  {idx:4d} {categories[idx]}")
    print()

    got = measure(entry.name)
    print("== Size against the paper ==")
    print(entry_report(entry.name, got))
    print()

    print("== Feature pyramid (features_only=True) at 224 px ==")
    for output_stride in (32, 8):
        backbone = create_model(entry.name, features_only=True, output_stride=output_stride).eval().to(device)
        with torch.inference_mode():
            feats = backbone(torch.zeros(1, 3, 224, 224, device=device))
        desc = ", ".join(f"C{i + 2} {tuple(f.shape[1:])} /{info['reduction']}"
                         for i, (f, info) in enumerate(zip(feats, backbone.feature_info)))
        print(f"  output_stride {output_stride:>2}: {desc}")
