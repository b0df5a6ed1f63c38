"""Split-attention maps: how each block of a ResNeSt divides its attention between the radix splits.

ResNeSt's r-softmax (Zhang et al. 2020, "ResNeSt: Split-Attention Networks", https://arxiv.org/abs/2004.08955,
§3 eq. 4) gives every channel ``c`` of cardinal group ``k`` one weight per split ``r``, softmax-normalised over
the R splits; the block output is the weighted sum of the splits. :func:`explain` records those weights with
forward hooks on the :class:`~splitattn.layers.RadixSoftmax` modules (the model is not changed) and reports,
per block and image:

* ``shares`` (B, R, K): the weights averaged over the C/K channels of each cardinal group — how the group's
  attention divides between its splits; sums to 1 over R. For radix 1 the r-softmax is a sigmoid gate
  (SE-style, eq. 4's R = 1 case), so the value is the mean gate in (0, 1), not a share;
* ``entropy`` (B, K): the entropy of each channel's split distribution, divided by log R and averaged over the
  group's channels: 0 = every channel picks one split, 1 = every channel mixes them evenly. Averaging the
  weights first (``shares``) can hide selection: channels picking different splits average to 1/R;
* ``dominant`` (B, K): the largest of each channel's R weights, averaged over the group's channels.

Channels are radix-major (``r·C + k·C/K + c``, see ``layers/split_attention.py``), so the r-softmax output
(B, R·C) reshapes to (B, R, K, C/K). ``python -m splitattn explain`` writes the numbers as JSON and the pictures
as PNG (matplotlib: ``pip install 'splitattn[plots]'``); :func:`run_explain` is that verb.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .layers import RadixSoftmax

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jfif")
DEFINITION = ("shares[r][k]: the r-softmax weight of split r (Zhang et al. 2020, arXiv 2004.08955, eq. 4) averaged "
              "over the channels of cardinal group k, summing to 1 over r; entropy[k]: each channel's split entropy "
              "/ log R, averaged over the group (0 = one split per channel, 1 = even mix); dominant[k]: each "
              "channel's largest split weight, averaged over the group")
GATE_DEFINITION = ("radix 1: shares[0][k] is the mean sigmoid gate of cardinal group k (an SE-style gate in (0, 1), "
                   "Zhang et al. 2020, arXiv 2004.08955, eq. 4 with R = 1), not a share; entropy and dominant do not "
                   "apply")


class ExplainError(ValueError):
    """The model or the input cannot be explained; the message names the cause and the fix."""


@dataclass
class SplitAttentionMaps:
    """What :func:`explain` found for a batch of B images, blocks in forward order (``layer1.0.conv2`` …).

    ``shares[name]`` is (B, R, K); ``entropy[name]`` and ``dominant[name]`` are (B, K) and absent for radix 1
    (where ``shares`` holds mean sigmoid gates, ``gate`` is True). ``predicted`` / ``probability`` (B,) are the
    top class and its softmax probability, None when the model has no classifier head.
    """

    blocks: list[str]
    shares: dict[str, torch.Tensor]
    entropy: dict[str, torch.Tensor]
    dominant: dict[str, torch.Tensor]
    radix: int
    cardinality: int
    predicted: torch.Tensor | None = None
    probability: torch.Tensor | None = None
    classes: list[str] | None = field(default=None, repr=False)

    @property
    def gate(self) -> bool:
        """True for radix 1: the values are sigmoid gates, not shares between splits."""
        return self.radix == 1

    def stacked(self) -> torch.Tensor:
        """All blocks' shares as one (B, blocks, R, K) tensor."""
        return torch.stack([self.shares[name] for name in self.blocks], dim=1)

    def predicted_names(self) -> list[str]:
        if self.predicted is None:
            return []
        return [self.classes[i] if self.classes and i < len(self.classes) else f"class {i}"
                for i in self.predicted.tolist()]

    def image_record(self, index: int) -> dict:
        """One image's numbers as plain JSON-ready values (5 decimals)."""
        record: dict = {}
        if self.predicted is not None:
            record.update(predicted=self.predicted_names()[index], class_index=int(self.predicted[index]),
                          probability=round(float(self.probability[index]), 5))
        for key, values in (("shares", self.shares), ("entropy", self.entropy), ("dominant", self.dominant)):
            if values:
                record[key] = {name: _rounded(values[name][index]) for name in self.blocks}
        return record


def _rounded(tensor: torch.Tensor) -> list:
    return torch.round(tensor.double(), decimals=5).tolist()  # float64: 0.494, not 0.49399998784065247


def attention_modules(model: nn.Module, what: str = "the model") -> list[tuple[str, RadixSoftmax]]:
    """``(block name, RadixSoftmax)`` in forward order; an :class:`ExplainError` when there is none."""
    found = [(name.rpartition(".")[0] or name, module) for name, module in model.named_modules()
             if isinstance(module, RadixSoftmax)]
    if not found:
        raise ExplainError(
            f"{what} has no split-attention blocks (radix 0 — the ResNet-D / ResNeXt-D baselines resnet50d and "
            "resnext50d_32x4d — has plain 3×3 convs, and splitattn.deploy() fuses the attention away), so there "
            "is no attention to show: choose a ResNeSt with radix >= 1 (e.g. resnest50, resnest50_fast_1s1x64d) "
            "and explain it before deploy()")
    return found


def split_weights(attention: torch.Tensor, radix: int, cardinality: int) -> torch.Tensor:
    """The r-softmax output (B, R·C), radix-major, as (B, R, K, C/K): split, cardinal group, channel."""
    return attention.reshape(attention.shape[0], radix, cardinality, -1)


def block_summary(attention: torch.Tensor, radix: int, cardinality: int) -> tuple[torch.Tensor, ...]:
    """``(shares (B, R, K), entropy (B, K) | None, dominant (B, K) | None)`` of one block's r-softmax output."""
    weights = split_weights(attention.float(), radix, cardinality)
    shares = weights.mean(-1)
    if radix == 1:
        return shares, None, None
    entropy = -torch.special.xlogy(weights, weights).sum(1) / math.log(radix)
    return shares, entropy.mean(-1), weights.amax(1).mean(-1)


def _as_batch(images, transform: Callable | None) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.unsqueeze(0) if images.dim() == 3 else images
    images = [images] if isinstance(images, Image.Image) else list(images)
    if transform is None:
        raise ExplainError("PIL images need the model's preprocessing: pass transform=splitattn.create_transform(NAME) "
                           "(or a preprocessed (B, C, H, W) tensor)")
    return torch.stack([transform(image) for image in images])


def _prediction(model: nn.Module, output) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Top class and probability, when ``output`` is classifier logits (a head with ≥ 2 classes)."""
    logits = output if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    if logits is None or getattr(model, "num_classes", logits.shape[1]) < 2:
        return None, None
    probability, predicted = logits.float().softmax(-1).max(-1)
    return predicted.cpu(), probability.cpu()


@torch.no_grad()
def explain(model: nn.Module, images, transform: Callable | None = None,
            classes: Sequence[str] | None = None) -> SplitAttentionMaps:
    """Run ``images`` through ``model`` in eval mode and return each split-attention block's attention.

    Args:
        model: a ResNeSt (any variant with radix ≥ 1, DCN and ``features_only`` included); left unchanged
            (hooks are removed and the train/eval mode restored afterwards).
        images: a preprocessed (C, H, W) or (B, C, H, W) tensor, or a PIL image / list of them with ``transform``.
        transform: the model's eval preprocessing, e.g. ``splitattn.create_transform("resnest50")``.
        classes: class names for :meth:`SplitAttentionMaps.predicted_names` (ImageNet's for the zoo weights).

    The weights are those of Zhang et al. 2020 (arXiv 2004.08955) eq. 4; see the module docstring for the
    summaries.
    """
    modules = attention_modules(model)
    radix, cardinality = modules[0][1].radix, modules[0][1].cardinality
    if any((m.radix, m.cardinality) != (radix, cardinality) for _, m in modules):
        raise ExplainError("the split-attention blocks differ in radix or cardinality; explain one ResNeSt at a time")
    outputs: dict[str, torch.Tensor] = {}

    def recorder(name: str):
        def hook(_module, _inputs, output):
            outputs[name] = output.detach().float().cpu()
        return hook

    device = next(model.parameters()).device
    batch = _as_batch(images, transform).to(device)
    handles = [module.register_forward_hook(recorder(name)) for name, module in modules]
    modes = [(module, module.training) for module in model.modules()]  # per module: some may be frozen in eval
    try:
        model.eval()
        predicted, probability = _prediction(model, model(batch))
    finally:
        for module, training in modes:
            module.training = training
        for handle in handles:
            handle.remove()
    names = [name for name, _ in modules if name in outputs]
    summaries = {name: block_summary(outputs[name], radix, cardinality) for name in names}
    return SplitAttentionMaps(
        names, {n: s[0] for n, s in summaries.items()},
        {n: s[1] for n, s in summaries.items() if s[1] is not None},
        {n: s[2] for n, s in summaries.items() if s[2] is not None},
        radix, cardinality, predicted, probability, list(classes) if classes is not None else None)


# --------------------------------------------------------------------------- many images, JSON


def class_means(records: Sequence[dict], blocks: Sequence[str]) -> dict[str, dict]:
    """Mean shares (and entropy) per block for each predicted class: ``{class: {count, shares, entropy}}``."""
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(record.get("predicted", "(no classifier head)"), []).append(record)
    summary = {}
    for name in sorted(grouped):
        members = grouped[name]
        entry: dict = {"count": len(members)}
        for key in ("shares", "entropy"):
            if key in members[0]:
                entry[key] = {b: _rounded(torch.tensor([m[key][b] for m in members]).mean(0)) for b in blocks}
        summary[name] = entry
    return summary


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (class subfolders included), sorted; hidden files skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` beside ``path``, then rename: no half-written file ever has the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, list) and all(map(_numeric, value)))


def _compact_json(record: dict) -> str:
    """Indented JSON with every (nested) list of numbers on one line, so an 89-block model stays readable."""
    inline: list[str] = []

    def mark(value):
        if isinstance(value, list) and value and _numeric(value):
            inline.append(json.dumps(value))
            return f"@inline{len(inline) - 1}@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        return [mark(v) for v in value] if isinstance(value, list) else value

    text = json.dumps(mark(record), indent=1)
    return re.sub(r'"@inline(\d+)@"', lambda m: inline[int(m.group(1))], text)


def write_json(path: Path, record: dict) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(_compact_json(record) + "\n"))


# --------------------------------------------------------------------------- pictures (matplotlib)

SPLIT_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def _bar_rows(maps: SplitAttentionMaps) -> list[tuple[str, str, int]]:
    """``(label, block, group)`` for every bar, top to bottom."""
    k = maps.cardinality
    return [(name if k == 1 else f"{name} g{g}", name, g) for name in maps.blocks for g in range(k)]


def _draw_shares(ax, maps: SplitAttentionMaps, index: int, rows) -> None:
    """Horizontal stacked bars, one per (block, cardinal group): the R splits' shares (or the gate)."""
    y = range(len(rows))
    left = [0.0] * len(rows)
    for r in range(maps.radix):
        widths = [float(maps.shares[b][index, r, g]) for _, b, g in rows]
        colour = "#7F7F7F" if maps.gate else SPLIT_COLOURS[r % len(SPLIT_COLOURS)]
        ax.barh(y, widths, left=left, color=colour, height=0.8, label=None if maps.gate else f"split {r}")
        if len(rows) <= 24:  # beyond that the numbers crowd the bars (the JSON has them all)
            for row, (w, x0) in enumerate(zip(widths, left)):
                if w >= 0.12:
                    ax.text(x0 + w / 2, row, f"{w:.2f}", ha="center", va="center", fontsize=6, color="white")
        left = [x0 + w for x0, w in zip(left, widths)]
    if not maps.gate:
        ax.axvline(1 / maps.radix, color="black", lw=0.6, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(list(y), [label for label, _, _ in rows], fontsize=7)
    ax.set_title("mean sigmoid gate per cardinal group\n(radix 1: an SE-style gate, not a share)" if maps.gate else
                 f"attention share of each split (R = {maps.radix}, K = {maps.cardinality})\nmean over the group's "
                 "channels; dotted line = even split", fontsize=8)


def _draw_selectivity(ax, maps: SplitAttentionMaps, index: int, rows) -> None:
    """Per-channel view: the mean largest split weight and the normalised entropy, per bar."""
    dominant = [float(maps.dominant[b][index, g]) for _, b, g in rows]
    entropy = [float(maps.entropy[b][index, g]) for _, b, g in rows]
    ax.scatter(dominant, range(len(rows)), s=12, color="black", label="dominant split weight")
    ax.scatter(entropy, range(len(rows)), s=12, marker="x", color="#C44E52", label="entropy / log R", clip_on=False)
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.tick_params(labelleft=False)
    ax.grid(axis="x", lw=0.3)
    ax.set_title("per channel, then averaged\n(even mix: dominant 1/R, entropy 1)", fontsize=8)


def plot_image(maps: SplitAttentionMaps, index: int, image: Image.Image, title: str, path: Path) -> Path:
    """One image: the photo with its prediction, and per block how attention divides between the splits."""
    from .engine.plots import pyplot

    plt = pyplot()
    rows = _bar_rows(maps)
    height = min(max(3.2, 0.2 * len(rows) + 1.4), 30)
    columns = [1.1, 2.2] + ([1.0] if not maps.gate else [])
    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * sum(columns), height),
                             gridspec_kw={"width_ratios": columns})
    axes[0].imshow(image, cmap="gray" if image.mode == "L" else None)
    axes[0].axis("off")
    axes[0].set_anchor("N")
    label = f"{maps.predicted_names()[index]} ({float(maps.probability[index]):.1%})" if maps.predicted is not None \
        else "(no classifier head)"
    axes[0].set_title(f"predicted: {label}", fontsize=8)
    _draw_shares(axes[1], maps, index, rows)
    if not maps.gate:
        _draw_selectivity(axes[2], maps, index, rows)
    handles = [h for ax in axes[1:] for h in ax.get_legend_handles_labels()[0]]
    if handles:  # one legend under the panels, clear of the bars
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.2 / height))  # room for the legend and the suptitle
    return _save(fig, plt, path)


def _heatmap(fig, ax, grid: torch.Tensor, columns: Sequence[str], blocks: Sequence[str], title: str,
             low: float, high: float, cmap: str) -> None:
    """One annotated heatmap: rows = blocks, columns = classes (× cardinal groups)."""
    image = ax.imshow(grid.numpy(), cmap=cmap, vmin=low, vmax=high, aspect="auto")
    if grid.numel() <= 400:
        norm = image.norm
        for i, row in enumerate(grid.tolist()):
            for j, value in enumerate(row):
                dark = abs(norm(value) - 0.5) > 0.3 if cmap == "RdBu_r" else norm(value) < 0.4  # viridis: dark low
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(blocks)), blocks, fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04)


def plot_by_class(summary: dict[str, dict], blocks: Sequence[str], radix: int, title: str, path: Path) -> Path:
    """Heatmaps per block (rows) and predicted class (columns, × cardinal group): the mean share of each split
    (split 0 alone for radix 2, as split 1 is its complement; the gate for radix 1), then the mean per-channel
    entropy, which shows selection that the averaged shares hide."""
    from .engine.plots import pyplot

    plt = pyplot()
    classes = list(summary)
    shares = torch.tensor([[summary[c]["shares"][b] for c in classes] for b in blocks])  # (blocks, classes, R, K)
    cardinality = shares.shape[-1]
    columns = [f"{c} ({summary[c]['count']})" + (f" g{g}" if cardinality > 1 else "")
               for c in classes for g in range(cardinality)]
    centre = 0.5 if radix == 1 else 1 / radix
    spread = max(float((shares - centre).abs().max()), 0.01)  # colours centred on the even split
    panels = [(shares[:, :, r, :].reshape(len(blocks), -1),
               "mean sigmoid gate (radix 1)" if radix == 1 else f"mean share of split {r}"
               + (" (split 1 = 1 − this)" if radix == 2 else ""), centre - spread, centre + spread, "RdBu_r")
              for r in ([0] if radix <= 2 else range(radix))]
    if radix > 1:
        entropy = torch.tensor([[summary[c]["entropy"][b] for c in classes] for b in blocks]).reshape(len(blocks), -1)
        panels.append((entropy, "per-channel entropy / log R\n(1 = even mix, 0 = one split)", float(entropy.min()),
                       1.0, "viridis"))
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(len(panels) * (1.6 + 0.45 * len(columns)), 1.8 + 0.28 * len(blocks)))
    for ax, (grid, name, low, high, cmap) in zip(axes[0], panels):
        _heatmap(fig, ax, grid, columns, blocks, name, low, high, cmap)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.2 / fig.get_figheight()))
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- `splitattn explain`


def output_paths(source: Path, out_dir: Path) -> dict[str, Path]:
    """The JSON and PNG written for ``source``: ``STEM.split_attention.{json,png}`` for an image,
    ``FOLDER.split_attention.json`` and ``FOLDER.split_attention_by_class.png`` for a folder."""
    stem = source.stem if source.is_file() else (source.resolve().name or "images")
    picture = "split_attention" if source.is_file() else "split_attention_by_class"
    return {"json": out_dir / f"{stem}.split_attention.json", "png": out_dir / f"{stem}.{picture}.png"}


def _inputs(source: Path) -> list[Path]:
    if not source.exists():
        raise ExplainError(f"{source} does not exist: give an image file or a folder of images")
    if source.is_file():
        return [source]
    files = image_files(source)
    if not files:
        raise ExplainError(f"folder {source} holds no images ({', '.join(IMAGE_SUFFIXES[:5])}, …): give a folder "
                           "of images or one image file")
    return files


def plan(source: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> tuple[list[Path], dict]:
    """The image files of ``source`` and the outputs (:func:`output_paths`), checked before any model is loaded:
    a missing path, an empty folder or an existing output without ``overwrite`` is an :class:`ExplainError`."""
    source = Path(source)
    files = _inputs(source)
    targets = output_paths(source, Path(out_dir))
    existing = [p for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise ExplainError(f"{existing[0]} already exists: pass --overwrite to replace it, or choose another --out")
    return files, targets


def _explain_files(predictor, paths: Sequence[Path], root: Path, batch_size: int, progress: bool):
    """Every readable image through the predictor: ``(records, skipped, last maps, last PIL image)``.
    A folder's unreadable files are skipped (and listed); a single unreadable file is an error."""
    from tqdm import tqdm

    from .data.images import ImageError, open_image

    records, skipped, maps, image = [], [], None, None
    bar = tqdm(total=len(paths), unit="img", desc="explain", disable=not progress or len(paths) == 1)
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start:start + batch_size]:
            try:
                batch.append((path, open_image(path)))
            except ImageError:
                if len(paths) == 1:
                    raise
                skipped.append(str(path))
        if batch:
            maps = explain(predictor.model, [img for _, img in batch], predictor.transform, predictor.classes)
            image = batch[-1][1]
            for i, (path, _) in enumerate(batch):
                name = path.name if path == root else str(path.relative_to(root))
                records.append({"path": name, **maps.image_record(i)})
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    if not records:
        raise ExplainError(f"no readable image in {root} ({len(skipped)} unreadable, e.g. {skipped[0]}): "
                           "check the files")
    return records, skipped, maps, image


def run_explain(predictor, source: str | os.PathLike, out_dir: str | os.PathLike = "split_attention",
                overwrite: bool = False, batch_size: int = 16, progress: bool = True) -> list[str]:
    """``splitattn explain``: the JSON of every image's numbers (and, for a folder, the means per predicted class)
    and a PNG (one image: its bars; a folder: the per-class heatmap). ``predictor`` is a
    :class:`~splitattn.classification.inference.Predictor`. Returns the lines to print, the summary last."""
    from .optional import MissingDependency

    source = Path(source)
    modules = attention_modules(predictor.model, predictor.source)  # radix 0 fails before any image is read
    paths, targets = plan(source, out_dir, overwrite)
    records, skipped, maps, image = _explain_files(predictor, paths, source, batch_size, progress)
    blocks = maps.blocks
    by_class = class_means(records, blocks)
    write_json(targets["json"], {
        "model": predictor.source, "input": str(source), "radix": maps.radix, "cardinality": maps.cardinality,
        "kind": "gate" if maps.gate else "share", "definition": GATE_DEFINITION if maps.gate else DEFINITION,
        "blocks": blocks, "images": records, "by_class": by_class, "skipped": skipped})
    written, notes = [targets["json"]], []
    try:
        if source.is_file():
            plot_image(maps, 0, image, f"{source.name} — {predictor.source}", targets["png"])
        else:
            plot_by_class(by_class, blocks, maps.radix, f"{source.name}: {len(records)} images by predicted class — "
                          f"{predictor.source}", targets["png"])
        written.append(targets["png"])
    except MissingDependency as err:
        notes.append(f"no PNG: {err}")
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}")
    kind = "gates" if maps.gate else "split shares"
    summary = (f"{len(records)} image(s), {len(modules)} split-attention blocks ({kind}, R = {maps.radix}, "
               f"K = {maps.cardinality}) with {predictor.source}: wrote {', '.join(str(p) for p in written)}")
    return [*notes, summary]
