"""The detection zoo: the released ResNeSt detectors (rows in :mod:`.zoo_table`), built and loaded by name.

``create_detector(pretrained=name)`` builds the row's architecture (the detectron2 flavour; for mmdet rows
an FPN without norm and mmdet's cascade conventions), downloads the file (cache, sha256 prefix,
``SPLITATTN_MIRRORS``, the offline message of :mod:`splitattn.models.weights`), converts it
(:mod:`.convert`) and loads it with ``strict=True``.
"""

from __future__ import annotations

import difflib
from types import MappingProxyType

from torch import nn

from ..models.weights import CheckpointError, download_checkpoint, read_checkpoint_file, resolve_checkpoint
from .convert import from_detectron2, from_mmdet, to_detector_state_dict
from .zoo_table import DETECTION_CHECKPOINTS, DetectionCheckpointRow

DETECTION_ZOO = MappingProxyType({row.name: row for row in DETECTION_CHECKPOINTS})

# COCO-2017's 80 categories in category-id order: label k (1..80) is the k-th (detectron2's contiguous ids + 1)
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def get_detection_entry(name: str) -> DetectionCheckpointRow:
    if name in DETECTION_ZOO:
        return DETECTION_ZOO[name]
    close = difflib.get_close_matches(name, list(DETECTION_ZOO), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown detection checkpoint {name!r}.{hint} See `splitattn list --task detect`.")


def list_detectors(layout: str | None = None) -> list[str]:
    return [row.name for row in DETECTION_CHECKPOINTS if layout in (None, row.layout)]


def train_sizes(row: DetectionCheckpointRow) -> tuple[int, ...]:
    low, high = row.train_sizes
    return tuple(range(low, high + 1, 32 if row.train_sampling == "choice" else 1))


def detector_kwargs(row: DetectionCheckpointRow) -> dict:
    """:func:`~splitattn.detection.create_detector` arguments that rebuild ``row``'s architecture and settings."""
    kwargs = dict(kind=row.kind, backbone=row.backbone, num_classes=len(COCO_CLASSES) + 1, norm="syncbn",
                  head_norm="syncbn", flavour="detectron2", mask_num_convs=row.mask_head_convs or 4,
                  min_size=train_sizes(row), max_size=row.train_max_size, test_size=row.test_size,
                  max_size_test=row.test_max_size)
    if row.layout == "mmdet":  # mmdet's ResNeSt configs: SyncBN in backbone and heads, a plain FPN
        kwargs.update(fpn_norm="none", cascade_style="mmdet")
    if row.deformable:  # the plug-in's DCN configs: modulated, res3-res5, 2 deformable groups
        kwargs.update(deform_stages=(2, 3, 4), deform_groups=2)
    if row.kind.endswith("panoptic_fpn"):  # its config: SyncBN semantic head, mask head without norm
        kwargs.update(sem_seg_norm="syncbn", mask_head_norm="none")
    return kwargs


def load_pretrained(model: nn.Module, row: DetectionCheckpointRow, progress: bool = True) -> list[str]:
    """Download ``row``'s file, convert it and load it into ``model`` (strict); returns the converter's notes."""
    path = download_checkpoint(row.urls, row.filename, row.sha256_prefix, progress)
    convert = from_mmdet if row.layout == "mmdet" else from_detectron2
    return _convert_and_load(model, path, convert, f"the {row.name} architecture")


def load_detector_file(model: nn.Module, source: str, progress: bool = True) -> list[str]:
    """A whole-detector file (path or URL; detectron2 or mmdet layout, or ours) into ``model``, strictly."""
    path = resolve_checkpoint(source, progress=progress)
    return _convert_and_load(model, path, to_detector_state_dict, f"a {model.kind} on this backbone")


def _convert_and_load(model: nn.Module, path, convert, architecture: str) -> list[str]:
    try:
        state, notes = convert(read_checkpoint_file(path))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(line.strip() for line in str(err).split("\n")[:3])
        raise CheckpointError(f"{path} does not fit {architecture}: {first}") from None
    return notes


def detection_zoo_table(pattern: str = "*") -> str:
    """The released detectors as a text table (``splitattn list --task detect``)."""
    import fnmatch

    rows = [r for r in DETECTION_CHECKPOINTS if fnmatch.fnmatch(r.name, pattern)]
    if not rows:
        raise ValueError(f"no released detector matches {pattern!r}: see `splitattn list --task detect`")
    head = f"{'name':<47} {'kind':<20} {'backbone':<11} {'box AP':>6} {'mask AP':>7} {'PQ':>5}  trained with"
    lines = [head, "-" * len(head)]
    for r in rows:
        mask = f"{r.mask_ap:.2f}" if r.mask_ap is not None else "-"
        pq = f"{r.pq:.2f}" if r.pq is not None else "-"
        extra = " + DCNv2" if r.deformable else ""
        lines.append(f"{r.name:<47} {r.kind:<20} {r.backbone:<11} {r.box_ap:>6.2f} {mask:>7} {pq:>5}  "
                     f"{r.layout}{extra}")
    lines.append("COCO val2017 AP as published (sources: splitattn.detection.zoo_table); "
                 "create_detector(pretrained=NAME) or `splitattn detect eval|predict --pretrained NAME`.")
    return "\n".join(lines)
