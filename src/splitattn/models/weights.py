"""Checkpoints: download with mirrors and sha256 checks, safe loading, and a readable key report.

ResNeSt's weight links broke several times (S3 → Wasabi → GitHub releases; ResNeSt #94, #153,
#183; timm #177), so every zoo checkpoint lists more than one URL, ``SPLITATTN_MIRRORS`` can put
your own hosts first, and an offline machine gets told exactly where to put the file.
Loading always uses ``torch.load(weights_only=True)`` or ``safetensors.torch.load_file``: a checkpoint cannot
run code. ``.safetensors`` files (https://github.com/huggingface/safetensors, "Format") are read wherever a
checkpoint is read, recognised by their header, and written by :func:`atomic_save` for a ``.safetensors`` path.
The Hugging Face Hub is a further source (``pretrained="hf-hub:…"``, the zoo's ``hub_files``): ``models/hub.py``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import pickle
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..optional import MissingDependency, require
from .zoo import Checkpoint, ModelEntry

HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be fetched, read or matched to the model; the message says how to fix it."""


def cache_dir() -> Path:
    """Checkpoint cache: ``$SPLITATTN_HOME/checkpoints``, else ``<torch hub dir>/splitattn/checkpoints``."""
    home = os.environ.get("SPLITATTN_HOME")
    root = Path(home).expanduser() if home else Path(torch.hub.get_dir()) / "splitattn"
    return root / "checkpoints"


def mirror_urls(filename: str) -> list[str]:
    """URLs built from ``SPLITATTN_MIRRORS`` (comma- or space-separated base URLs), tried before the zoo's own."""
    bases = os.environ.get("SPLITATTN_MIRRORS", "").replace(",", " ").split()
    return [f"{base.rstrip('/')}/{filename}" for base in bases]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, sha256_prefix: str | None, progress: bool, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``dest``, verify, then rename it into place."""
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "splitattn"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            digest = hashlib.sha256()
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                      leave=False) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
            if total is not None and out.tell() != total:
                raise CheckpointError(f"download ended after {out.tell()} of {total} bytes")
        actual = digest.hexdigest()
        if sha256_prefix and not actual.startswith(sha256_prefix):
            raise CheckpointError(f"sha256 {actual[:16]}… does not start with the expected {sha256_prefix}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def download_checkpoint(urls: list[str] | tuple[str, ...], filename: str, sha256_prefix: str | None = None,
                        progress: bool = True, timeout: float = 30.0) -> Path:
    """Return the cached ``filename``, downloading it from the first URL that works.

    A cached file whose hash is wrong is deleted and fetched again; a failed or partial download
    leaves nothing in the cache.
    """
    dest = cache_dir() / filename
    if dest.is_file():
        if sha256_prefix is None or sha256_of(dest).startswith(sha256_prefix):
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in [*mirror_urls(filename), *urls]:
        try:
            _fetch(url, dest, sha256_prefix, progress, timeout)
            return dest
        except (CheckpointError, urllib.error.URLError, http.client.HTTPException, OSError) as err:
            errors.append(f"  {url}: {getattr(err, 'reason', None) or err}")
    tried = "\n".join(errors) or "  (no URL known)"
    raise CheckpointError(
        f"could not download {filename}; tried:\n{tried}\n"
        f"Fix: download the file yourself and put it at {dest} (SPLITATTN_HOME moves the cache), "
        f"pass pretrained='/path/to/{filename}', or list a reachable host in SPLITATTN_MIRRORS."
    )


def _released(entry: ModelEntry | None) -> Checkpoint:
    if entry is None or entry.checkpoint is None:
        name = entry.name if entry else "this model"
        raise CheckpointError(
            f"no released checkpoint is known for {name}: pass pretrained='/path/or/url.pth' "
            "with your own weights (models with released weights: splitattn list --pretrained)")
    return entry.checkpoint


def _zoo_checkpoint(entry: ModelEntry | None, progress: bool) -> tuple[Path, str, str | None]:
    """The official file (cache, ``SPLITATTN_MIRRORS``, zoo URLs); when none answers, the zoo's Hub copies."""
    ckpt = _released(entry)
    try:
        return download_checkpoint(ckpt.urls, ckpt.filename, ckpt.sha256_prefix, progress), "official", None
    except CheckpointError as official:
        if not ckpt.hub_files:
            raise
        failures = [str(official)]
    from .hub import download_hub_file  # lazy: hub.py imports this module

    for hub in ckpt.hub_files:
        try:
            path = download_hub_file(hub, progress)
        except (CheckpointError, MissingDependency) as err:
            failures.append(f"  {hub.spec}: {err}")
            continue
        note = f"the official URLs failed; loaded the Hugging Face Hub copy {hub.spec} ({hub.filename})"
        return path, hub.keys, note
    raise CheckpointError("\n".join([failures[0], "and the Hugging Face Hub copies, tried next:", *failures[1:]]))


def _zoo_hub_file(entry: ModelEntry | None, progress: bool) -> tuple[Path, str, str | None]:
    """``pretrained="hf-hub"``: the zoo's first Hub copy only."""
    from .hub import download_hub_file

    hubs = _released(entry).hub_files
    if not hubs:
        raise CheckpointError(f"no Hugging Face Hub copy is known for {entry.name}: pass pretrained=True (official "
                              "URLs) or pretrained='hf-hub:OWNER/NAME' for a repository you know")
    return download_hub_file(hubs[0], progress), hubs[0].keys, None


def resolve_source(source: bool | str | os.PathLike, entry: ModelEntry | None = None,
                   progress: bool = True) -> tuple[Path, str, str | None]:
    """``pretrained=`` → (local file, its key layout, a note for the load report or None).

    ``source``: True (official URLs, then the zoo's Hub copies), ``"hf-hub"`` (the zoo's Hub copy),
    ``"hf-hub:OWNER/NAME[/FILE][@REVISION]"``, a URL or a local path (``.pth`` or ``.safetensors``).
    """
    if source is True:
        return _zoo_checkpoint(entry, progress)
    text = os.fspath(source)
    if text == "hf-hub":
        return _zoo_hub_file(entry, progress)
    if text.startswith("hf-hub:"):
        from .hub import download_hub_file, parse_hub_spec

        hub = parse_hub_spec(text)
        return download_hub_file(hub, progress), hub.keys, None
    if re.match(r"^(https?|file)://", text):
        filename = text.rsplit("/", 1)[-1].split("?")[0]
        match = HASH_IN_NAME.search(filename)  # torch.hub convention: name-<sha256 prefix>.pth
        return download_checkpoint([text], filename, match.group(1) if match else None, progress), "official", None
    path = Path(text).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist: check the path (or pass pretrained=True "
                              "to download the released weights)")
    return path, "official", None


def resolve_checkpoint(source: bool | str | os.PathLike, entry: ModelEntry | None = None,
                       progress: bool = True) -> Path:
    """Turn ``pretrained=`` (True, ``"hf-hub"``, ``"hf-hub:…"``, a local path or a URL) into a local file."""
    return resolve_source(source, entry, progress)[0]


_FULL_DISK_BYTES = 4 << 20  # after a failed write, less free space than this means the disk filled up


def _safetensors_ready(obj, path: Path) -> dict[str, torch.Tensor]:
    """A flat dict of contiguous tensors, none sharing memory: all that safetensors stores (its README, "Format")."""
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        got = type(obj).__name__ if not isinstance(obj, dict) else "an empty dict" if not obj else \
            "a dict with non-tensor entries"
        raise CheckpointError(f"cannot write {path.name} as safetensors: it holds only a flat dict of tensors, got "
                              f"{got}. Save it as .pth (or pass its state_dict)")
    ready, seen = {}, set()
    for key, value in obj.items():
        value = value.detach().contiguous()
        ptr = value.untyped_storage().data_ptr()
        if ptr and ptr in seen:  # save_file refuses tensors sharing storage (tied weights): store a copy
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        ready[key] = value
    return ready


def _write(obj, tmp: Path, fmt: str) -> None:
    """Write ``obj`` to ``tmp`` in ``fmt`` and fsync it."""
    if fmt == "safetensors":
        require("safetensors.torch", "writing .safetensors").save_file(obj, str(tmp), metadata={"format": "pt"})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        return
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def save_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``'safetensors'`` or ``'torch'``: ``fmt`` when given, else from the extension (``.safetensors``)."""
    if fmt is None:
        return "safetensors" if Path(path).suffix.lower() == ".safetensors" else "torch"
    if fmt in ("pth", "pt", "torch"):
        return "torch"
    if fmt != "safetensors":
        raise ValueError(f"unknown checkpoint format {fmt!r}: choose 'pth' (torch.save) or 'safetensors'")
    return fmt


def atomic_save(obj, path: str | os.PathLike, hint: str = "", fmt: str | None = None) -> Path:
    """``torch.save`` (or safetensors, see :func:`save_format`) to a temporary file beside ``path``, fsync it,
    rename it over ``path``, fsync the folder.

    Any failure (a full disk surfaces as torch's zip-writer RuntimeError, not as an OSError) removes the
    temporary file and leaves a previous ``path`` untouched; it becomes a :class:`CheckpointError` that
    names a full disk as such. ``hint`` is added to that message (e.g. how to resume).
    """
    path = Path(path)
    fmt = save_format(path, fmt)
    if fmt == "safetensors":  # checked before anything is written: a wrong object or a missing package is no I/O error
        require("safetensors.torch", "writing .safetensors")
        obj = _safetensors_ready(obj, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write(obj, tmp, fmt)
        os.replace(tmp, path)
    except BaseException as err:
        free = shutil.disk_usage(path.parent).free
        tmp.unlink(missing_ok=True)
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: the temp file is gone, go on
            raise
        full = getattr(err, "errno", None) == errno.ENOSPC or free < _FULL_DISK_BYTES
        cause = f"the disk is full ({free / 2**20:.1f} MiB free)" if full else f"{type(err).__name__}: " \
            + (str(err).strip().splitlines() or [""])[-1]
        previous = f"; the previous {path.name} is intact" if path.exists() else ""
        raise CheckpointError(f"could not write {path}: {cause}{previous}. {hint or 'Free space and try again.'}") \
            from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def _describe_bytes(head: bytes) -> str:
    """What a file that torch cannot load looks like, from its first bytes."""
    if head.startswith(b"PK"):
        return "its zip archive is truncated or corrupt"
    if head.startswith(b"\x80"):
        return "its pickle stream is truncated or corrupt"
    if head.startswith((b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"RIFF")):
        return "it is an image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"it holds text ({text[:24].strip()!r}…)"
    return "its bytes are not a PyTorch checkpoint"


_SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors refuses larger headers (safetensors/src/tensor.rs MAX_HEADER_SIZE)


def is_safetensors(head: bytes) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and then the JSON header."""
    return len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER


def _safetensors_problem(path: Path, head: bytes) -> str | None:
    """Why ``path`` is not a complete safetensors file (truncated, corrupt header), or None if its layout is sound."""
    size, length = path.stat().st_size, int.from_bytes(head[:8], "little")
    if 8 + length > size:
        return f"it is truncated: the header alone needs {length} bytes, the file has {size - 8} after the length"
    with open(path, "rb") as handle:
        handle.seek(8)
        raw = handle.read(length)
    try:
        header = json.loads(raw)
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        return f"its JSON header is corrupt ({type(err).__name__}: {str(err)[:80]})"
    if 8 + length + end > size:
        return f"it is truncated: its tensors need {end} bytes after the header, the file has {size - 8 - length}"
    return None


def _read_safetensors(path: Path, head: bytes) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` on the CPU, with the file's defect named when it cannot be read."""
    load_file = require("safetensors.torch", f"reading {path.name}").load_file
    problem = _safetensors_problem(path, head)
    if problem is None:
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError, or OSError from mmap
            problem = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise CheckpointError(f"{path} is not a readable safetensors file: {problem}. Save or download it again")


def read_checkpoint_file(path: str | os.PathLike):
    """``torch.load(weights_only=True)``, or ``safetensors.torch.load_file`` for a file with a safetensors header,
    with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint file {path} {what}")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint. Save or download it again")
    if is_safetensors(head):
        return _read_safetensors(path, head)
    try:
        with open(path, "rb") as handle:  # a handle: torch.load(path) reads any *.safetensors name as safetensors
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # "Unsupported global" = a real pickle naming Python classes: refuse to run it, say how to clean it
        if "unsupported global" in str(err).lower():
            raise CheckpointError(
                f"{path} holds pickled Python objects, not just tensors, and splitattn never unpickles code "
                "(torch.load weights_only=True). If you trust its origin, re-save its tensors: "
                "torch.save(torch.load(p, weights_only=False)['state_dict'], 'clean.pth')") from None
        raise CheckpointError(f"{path} is not a checkpoint: {_describe_bytes(head)}. Save or download it again") \
            from None
    except Exception:  # torch raises RuntimeError, EOFError, KeyError, ValueError … for bytes it cannot read
        what = "not a checkpoint"
        if path.suffix.lower() == ".safetensors":  # named so, yet no safetensors header: say which format failed
            what = "neither a safetensors file (no 8-byte header length + JSON header) nor a torch.save file"
        raise CheckpointError(f"{path} is {what}: {_describe_bytes(head)}. Save or download it again") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state_dict safely; unwrap ``state_dict`` / ``model`` (training checkpoints) and DDP ``module.``."""
    obj = read_checkpoint_file(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state_dict (a dict of tensors): got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


@dataclass
class LoadReport:
    """What :func:`load_weights` did beyond a plain strict load."""

    source: str
    loaded: int = 0
    notes: list[str] = field(default_factory=list)


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB stem weights for another channel count: summed for 1 channel, tiled and rescaled otherwise."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load_weights(model: nn.Module, source: bool | str | os.PathLike | dict, *, head: bool | None = True,
                 entry: ModelEntry | None = None, progress: bool = True) -> LoadReport:
    """Load a checkpoint into ``model`` strictly, explaining any mismatch before anything is changed.

    Args:
        source: a state_dict, a path, a URL, or True for ``entry``'s released checkpoint.
        head: True requires the classifier to match; False keeps the model's own (new) head;
            None loads the head when it matches and otherwise keeps the new one, saying so.
    """
    note = None
    if isinstance(source, dict):
        state, label = dict(source), "state_dict"
    else:
        path, keys, note = resolve_source(source, entry, progress)
        state, label = read_state_dict(path), str(path)
        if keys != "official":
            from .key_converters import hub_keys_to_official  # lazy: key_converters imports this module

            state = hub_keys_to_official(state, keys)
    report = LoadReport(label, notes=[note] if note else [])
    own = model.state_dict()

    stem = "conv1.0.weight"
    if stem in state and stem in own and state[stem].shape[1] != own[stem].shape[1]:
        theirs = state[stem].shape[1]
        state[stem] = _adapt_input_conv(state[stem], own[stem].shape[1])
        report.notes.append(f"adapted the checkpoint's {theirs}-channel stem to {own[stem].shape[1]} channels")

    ckpt_head = [k for k in state if k.startswith("fc.")]
    model_has_head = "fc.weight" in own
    keep_model_head = False
    if model_has_head and head is False:
        keep_model_head = True
        report.notes.append("kept the model's own classifier (head=False)")
    elif model_has_head and not ckpt_head and head is None:
        keep_model_head = True
        report.notes.append("the checkpoint has no classifier: kept the model's freshly initialised fc")
    elif model_has_head and ckpt_head and state["fc.weight"].shape != own["fc.weight"].shape:
        ckpt_classes, model_classes = state["fc.weight"].shape[0], own["fc.weight"].shape[0]
        if head:
            raise CheckpointError(
                f"checkpoint has {ckpt_classes} classes, model has {model_classes}: pass "
                f"num_classes={ckpt_classes}, or load with head=False to keep a new {model_classes}-way head")
        keep_model_head = True
        report.notes.append(f"checkpoint has {ckpt_classes} classes, model has {model_classes}: loaded the "
                            f"backbone and kept a freshly initialised {model_classes}-way fc")
    if keep_model_head or not model_has_head:  # a headless model (num_classes=0, features) drops it quietly
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    # Old torch wrote no num_batches_tracked; frozen/group norm layers have none: neither is a mismatch.
    state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    # A DCN model from a plain checkpoint (detectron2 does the same): the offset convs keep their zero init.
    fresh_offsets = [k for k in own if ".conv2_offset." in k and k not in state]
    if fresh_offsets and not any(".conv2_offset." in k for k in state):
        report.notes.append(f"the checkpoint has no deformable-conv offsets: kept {len(fresh_offsets) // 2} "
                            "zero-initialised conv2_offset layers (the deformable convs start as plain convs)")
    else:
        fresh_offsets = []
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")
               and not (keep_model_head and k.startswith("fc.")) and k not in fresh_offsets]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {label} does not match the model ({type(model).__name__}):"]
        if missing:
            lines.append(f"  missing from the checkpoint ({len(missing)}): {_summarise(missing)}")
        if unexpected:
            lines.append(f"  not in the model ({len(unexpected)}): {_summarise(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatch ({len(shapes)}): {_summarise(shapes, 3)}")
        lines.append("Fix: build the variant the checkpoint was saved from (compare blocks per stage, radix, "
                     "cardinality, stem width), or convert its keys to the official layout.")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=False)
    report.loaded = len(state)
    return report
