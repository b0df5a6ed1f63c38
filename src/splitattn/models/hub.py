"""Weights from the Hugging Face Hub: ``pretrained="hf-hub:OWNER/NAME[/FILE][@REVISION]"`` and the zoo's Hub copies.

Files come through ``huggingface_hub.hf_hub_download`` (https://huggingface.co/docs/huggingface_hub/guides/download),
so they land in, and are reused from, the shared Hugging Face cache (``HF_HUB_CACHE``, default ``$HF_HOME/hub``).
``HF_ENDPOINT`` (another Hub or a mirror), ``HF_HUB_OFFLINE`` (cache only) and ``HF_HUB_CACHE`` are read from the
environment at each call as well as by huggingface_hub at import (its ``constants.py``), so setting them after
``import huggingface_hub`` still works; ``HF_HOME`` is only read at that import.

Integrity: huggingface_hub stores each file as ``blobs/<etag>`` with the snapshot path a link to it
(https://huggingface.co/docs/huggingface_hub/guides/manage-cache). For an LFS file, which model weights are, that
etag is the Hub's ``X-Linked-Etag``: the sha256 of the content; for a small git file it is the git blob sha1.
huggingface_hub checks only the length of what it downloaded (``file_download.py``, ``http_get``), so this module
re-hashes the file on every use, against the zoo's ``sha256`` when known and otherwise against that etag.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

from ..optional import require
from .weights import CheckpointError, sha256_of
from .zoo import HubFile

HUB_PREFIX = "hf-hub:"
_CHUNK = 1 << 20
_SPEC_HELP = "expected hf-hub:OWNER/NAME[/FILE][@REVISION], e.g. hf-hub:timm/resnest50d.in1k@main"


def parse_hub_spec(spec: str) -> HubFile:
    """``hf-hub:OWNER/NAME[/FILE][@REVISION]`` → :class:`HubFile` (FILE defaults to ``model.safetensors``).

    Repository ids have exactly two parts (https://huggingface.co/docs/hub/repositories), so anything after the
    second ``/`` is the file's path inside the repository. The revision is a branch, tag or commit hash.
    """
    body = spec.removeprefix(HUB_PREFIX)
    body, _, revision = body.partition("@")
    parts = body.split("/")
    if len(parts) < 2 or not all(parts) or (_ and not revision):
        raise CheckpointError(f"cannot read {spec!r}: {_SPEC_HELP}")
    filename = "/".join(parts[2:]) or "model.safetensors"
    return HubFile(f"{parts[0]}/{parts[1]}", filename, revision or "main", keys="timm")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` now, or as huggingface_hub read it at import."""
    constants = require("huggingface_hub.constants", "the Hugging Face Hub")
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or bool(constants.is_offline_mode())


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` now, or as huggingface_hub read it at import (default https://huggingface.co)."""
    constants = require("huggingface_hub.constants", "the Hugging Face Hub")
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache() -> str:
    """Where huggingface_hub keeps its files: ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``)."""
    constants = require("huggingface_hub.constants", "the Hugging Face Hub")
    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _describe(hub: HubFile) -> str:
    return f"{hub.filename} of {hub.repo_id} @ {hub.revision}"


def _hub_error(err: Exception, hub: HubFile, offline: bool) -> CheckpointError:
    """One line naming the cause and the fix for a failed ``hf_hub_download``."""
    errors = require("huggingface_hub.errors", "the Hugging Face Hub")
    what = _describe(hub)
    if isinstance(err, errors.LocalEntryNotFoundError):
        if offline:
            return CheckpointError(
                f"{what} is not in the Hugging Face cache ({hub_cache()}) and HF_HUB_OFFLINE is set: fetch it once "
                f"online (splitattn download NAME --source hf-hub, or pretrained='{hub.spec}'), copy the cache over, "
                "or unset HF_HUB_OFFLINE")
        return CheckpointError(f"{what}: the Hub at {hub_endpoint()} could not be reached and the file is not in the "
                               f"cache ({hub_cache()}): check the connection or HF_ENDPOINT, or use a machine online")
    if isinstance(err, errors.RevisionNotFoundError):
        return CheckpointError(f"{what}: revision {hub.revision!r} does not exist in {hub.repo_id}: use a branch, "
                               "tag or commit hash of that repository (…@main)")
    if isinstance(err, errors.RepositoryNotFoundError):
        return CheckpointError(f"{what}: repository {hub.repo_id} not found at {hub_endpoint()} (or it is private or "
                               "gated): check the id, or log in (hf auth login / HF_TOKEN)")
    if isinstance(err, errors.EntryNotFoundError):
        return CheckpointError(f"{what}: the repository has no file {hub.filename!r}: name the file, "
                               f"hf-hub:{hub.repo_id}/FILE")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return CheckpointError(f"{what}: download failed ({type(err).__name__}: {first}); try again, or check "
                           "HF_ENDPOINT and the connection")


def _git_blob_sha1(path: Path) -> str:
    """git's object id of a file: sha1 over ``blob <size>\\0`` + content (git-scm.com/book, Git Objects)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_digest(hub: HubFile, blob: Path) -> tuple[str, str, str] | None:
    """(kind, expected digest, its source) for ``blob``; None when nothing to check against is known."""
    if hub.sha256:
        return "sha256", hub.sha256.lower(), "the zoo's sha256"
    if re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return "sha256", blob.name, "the Hub's LFS sha256 (its X-Linked-Etag)"
    if re.fullmatch(r"[0-9a-f]{40}", blob.name):
        return "git-sha1", blob.name, "the Hub's git blob id (its ETag)"
    return None


def verify_hub_file(path: str | os.PathLike, hub: HubFile) -> Path:
    """Re-hash a file ``hf_hub_download`` returned; a mismatch deletes the cached copy and raises."""
    path = Path(path)
    blob = Path(os.path.realpath(path))
    expected = _expected_digest(hub, blob)
    if expected is None:  # no symlinks in this cache (e.g. Windows without developer mode): the blob name is lost
        warnings.warn(f"{_describe(hub)}: no sha256 known and the Hugging Face cache keeps no blob names here, so "
                      "the file could not be checked; add sha256= to its HubFile to check it", stacklevel=3)
        return path
    kind, digest, source = expected
    actual = sha256_of(blob) if kind == "sha256" else _git_blob_sha1(blob)
    if actual != digest:
        for stale in {blob, path}:
            stale.unlink(missing_ok=True)
        raise CheckpointError(f"{_describe(hub)}: {kind} {actual[:16]}… does not match {source} {digest[:16]}…; the "
                              "corrupt copy was deleted from the Hugging Face cache: load it again to download it "
                              "afresh")
    return path


def download_hub_file(hub: HubFile, progress: bool = True) -> Path:
    """The local path of ``hub`` from the Hugging Face cache, downloaded first if needed, then verified."""
    hf = require("huggingface_hub", f"loading {hub.spec}")
    offline = hub_offline()
    from huggingface_hub.utils.tqdm import silent_tqdm

    kwargs = {} if progress else {"tqdm_class": silent_tqdm}
    try:
        path = hf.hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision, endpoint=hub_endpoint(),
                                  cache_dir=hub_cache(), local_files_only=offline, **kwargs)
    except Exception as err:  # noqa: BLE001  its own errors, and its HTTP client's (timeouts, dropped connections)
        raise _hub_error(err, hub, offline) from None
    return verify_hub_file(path, hub)
