"""The segmentation zoo: the released ResNeSt segmenters (rows in :mod:`.zoo_table`), built and loaded by name.

``create_segmenter(pretrained=name)`` builds the row's architecture (PyTorch-Encoding's or mmseg's flavour),
downloads the file (cache, ``SPLITATTN_MIRRORS``, the offline message of :mod:`splitattn.models.weights`; Encoding's
files come as a zip whose ``.pth`` is checked against its full SHA-1, mmseg's by the sha256 prefix in the name),
converts it (:mod:`.convert`) and loads it with ``strict=True``.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import zipfile
from pathlib import Path
from types import MappingProxyType

from torch import nn

from ..models.weights import CheckpointError, cache_dir, download_checkpoint, read_checkpoint_file, resolve_checkpoint
from .convert import flavour_of, from_encoding, from_mmseg, to_segmenter_state_dict
from .zoo_table import SEGMENTATION_CHECKPOINTS, SegmentationCheckpointRow

SEGMENTATION_ZOO = MappingProxyType({row.name: row for row in SEGMENTATION_CHECKPOINTS})
_DEFAULTS = {"kind": "deeplabv3", "backbone": "resnest50", "num_classes": 150, "flavour": "encoding"}


def get_segmentation_entry(name: str) -> SegmentationCheckpointRow:
    if name in SEGMENTATION_ZOO:
        return SEGMENTATION_ZOO[name]
    close = difflib.get_close_matches(name, list(SEGMENTATION_ZOO), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown segmentation checkpoint {name!r}.{hint} See `splitattn list --task segment`.")


def list_segmenters(layout: str | None = None) -> list[str]:
    return [row.name for row in SEGMENTATION_CHECKPOINTS if layout in (None, row.layout)]


def segmenter_kwargs(row: SegmentationCheckpointRow) -> dict:
    """:func:`~splitattn.segmentation.create_segmenter` arguments that rebuild ``row``'s architecture."""
    return dict(kind=row.kind, backbone=row.backbone, num_classes=row.num_classes, flavour=row.layout)


def _sha1_of(path: Path) -> str:
    digest = hashlib.sha1()  # noqa: S324 - PyTorch-Encoding publishes SHA-1 sums
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_checked(archive: Path, member: str, dest: Path, sha1: str) -> None:
    """``member`` of ``archive`` → a temporary file beside ``dest``, SHA-1 checked, renamed into place."""
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if Path(n).name == member]
            if not names:
                raise CheckpointError(f"{archive} holds no {member} (it holds {', '.join(zf.namelist()[:5])})")
            with zf.open(names[0]) as src, open(partial, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        actual = _sha1_of(partial)
        if actual != sha1:
            raise CheckpointError(f"{member} from {archive.name} has SHA-1 {actual[:16]}…, expected {sha1[:16]}…")
        os.replace(partial, dest)
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{archive} is not a zip file ({err})") from None
    finally:
        partial.unlink(missing_ok=True)


def download_row(row: SegmentationCheckpointRow, progress: bool = True) -> Path:
    """The row's ``.pth`` in the cache, downloaded (and, for Encoding's zips, extracted and SHA-1 checked) once."""
    if row.archive is None:
        return download_checkpoint(row.urls, row.filename, row.sha256_prefix, progress)
    dest = cache_dir() / row.filename
    if dest.is_file():
        if _sha1_of(dest) == row.sha1:
            return dest
        dest.unlink()
    archive = download_checkpoint(row.urls, row.archive, None, progress)
    try:
        _extract_checked(archive, row.filename, dest, row.sha1)
    finally:
        archive.unlink(missing_ok=True)
    return dest


def load_pretrained(model: nn.Module, row: SegmentationCheckpointRow, progress: bool = True) -> list[str]:
    """Download ``row``'s file, convert it and load it into ``model`` (strict); returns the converter's notes."""
    path = download_row(row, progress)
    convert = from_mmseg if row.layout == "mmseg" else from_encoding
    try:
        state, notes = convert(read_checkpoint_file(path))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return notes + _load_strict(model, state, path, f"the {row.name} architecture")


def _load_strict(model: nn.Module, state: dict, path, architecture: str) -> list[str]:
    """``strict=True``; BN ``num_batches_tracked`` counters (absent from files saved by old PyTorch, unused at
    inference) are the only keys filled in, with a note."""
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked") and k not in state]
    state = {**state, **{k: model.state_dict()[k].new_zeros(()) for k in counters}}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(line.strip() for line in str(err).split("\n")[:3])
        raise CheckpointError(f"{path} does not fit {architecture}: {first}") from None
    return [f"the file has no BN num_batches_tracked counters: set {len(counters)} to 0"] if counters else []


def build_pretrained(source: str, progress: bool = True, **kwargs) -> nn.Module:
    """``create_segmenter(pretrained=source, **kwargs)``: a zoo name, or a path / URL of a whole-segmenter file."""
    from .models import create_segmenter

    if source in SEGMENTATION_ZOO or not (os.sep in source or "." in source or ":" in source):
        row = get_segmentation_entry(source)
        for key, value in segmenter_kwargs(row).items():
            given = kwargs.pop(key, value)
            if given not in (value, _DEFAULTS[key]):
                raise ValueError(f"{row.name} is a {key}={value!r} model, not {given!r}: drop {key}= or pick "
                                 "another checkpoint (splitattn list --task segment)")
        model = create_segmenter(**segmenter_kwargs(row), progress=progress, **kwargs)
        model.notes = load_pretrained(model, row, progress)
        model.zoo_row = row
        return model
    path = resolve_checkpoint(source, progress=progress)
    try:
        state, notes, _ = to_segmenter_state_dict(read_checkpoint_file(path))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    flavour = flavour_of(state)
    if kwargs.get("flavour", flavour) not in (flavour, _DEFAULTS["flavour"]):
        raise ValueError(f"{path} holds a {flavour}-flavour segmenter, not {kwargs['flavour']!r}: drop flavour=")
    kwargs["flavour"] = flavour
    model = create_segmenter(progress=progress, **kwargs)
    model.notes = notes + _load_strict(model, state, path, f"a {model.kind} on "
                                       f"{kwargs.get('backbone', _DEFAULTS['backbone'])} with {model.num_classes} "
                                       f"classes ({flavour} flavour)")
    return model


def segmentation_zoo_table(pattern: str = "*") -> str:
    """The released segmenters as a text table (``splitattn list --task segment``)."""
    rows = [r for r in SEGMENTATION_CHECKPOINTS if fnmatch.fnmatch(r.name, pattern)]
    if not rows:
        raise ValueError(f"no released segmenter matches {pattern!r}: see `splitattn list --task segment`")
    head = f"{'name':<40} {'kind':<13} {'backbone':<11} {'dataset':<10} {'pixAcc':>6} {'mIoU':>6} {'ms+flip':>7}  from"
    lines = [head, "-" * len(head)]
    for r in rows:
        pix = f"{r.pixel_accuracy:.2f}" if r.pixel_accuracy is not None else "-"
        if r.layout == "encoding":  # Encoding publishes its multi-scale + flip figure only
            single, ms = "-", f"{r.mean_iou:.2f}"
        else:
            single, ms = f"{r.mean_iou:.2f}", f"{r.mean_iou_ms:.2f}"
        lines.append(f"{r.name:<40} {r.kind:<13} {r.backbone:<11} {r.dataset:<10} {pix:>6} {single:>6} {ms:>7}  "
                     f"{r.layout}")
    lines.append("Val-set figures (%) as published (sources: splitattn.segmentation.zoo_table); Encoding's are "
                 "multi-scale + flip. create_segmenter(pretrained=NAME) or `splitattn segment eval|predict "
                 "--pretrained NAME`.")
    return "\n".join(lines)
