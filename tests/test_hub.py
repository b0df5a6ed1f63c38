"""The Hugging Face Hub as a weight source, through huggingface_hub against a stand-in Hub on 127.0.0.1.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE into ``huggingface_hub.constants`` at import;
the ``hub`` fixture patches those constants and the environment (which splitattn also reads at each call), so
nothing here can reach the real Hub or the user's cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

import splitattn
from splitattn.cli import main
from splitattn.models.hub import parse_hub_spec
from splitattn.models.weights import CheckpointError, load_weights
from splitattn.models.zoo import Checkpoint, HubFile, get_entry, list_models, register_model, unregister_model
from splitattn.optional import MissingDependency
from tests.conftest import randomize_
from tests.hub_standin import StandInHub

TIMM_NAMES = {"resnest14": "resnest14d", "resnest26": "resnest26d", "resnest50": "resnest50d",
              "resnest101": "resnest101e", "resnest200": "resnest200e", "resnest269": "resnest269e",
              "resnest50_fast_4s2x40d": "resnest50d_4s2x40d", "resnest50_fast_1s4x24d": "resnest50d_1s4x24d"}


def _set(monkeypatch, name: str, value: str | None, constant: str, constant_value) -> None:
    """An HF setting in both places it is read: the environment and huggingface_hub.constants."""
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, constant, constant_value)


@pytest.fixture
def hub(tmp_path, monkeypatch, home):
    server = StandInHub()
    _set(monkeypatch, "HF_ENDPOINT", server.url, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    _set(monkeypatch, "HF_HOME", str(tmp_path / "hf"), "HF_HOME", str(tmp_path / "hf"))
    _set(monkeypatch, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    _set(monkeypatch, "HF_HUB_OFFLINE", None, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server.cache = tmp_path / "hf" / "hub"
    yield server
    server.close()


def _safetensors_bytes(state: dict, tmp_path: Path, name: str = "w.safetensors") -> bytes:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path.read_bytes()


def _tiny_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return splitattn.create_model("resnest14").state_dict()


def _dead_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/gone.pth"


def _entry_with_dead_urls(name: str, hub_files=None):
    """resnest14's zoo entry with unreachable official URLs (and its own or the given Hub files)."""
    real = get_entry("resnest14")
    ckpt = dataclasses.replace(real.checkpoint, urls=(_dead_url(),),
                               **({"hub_files": hub_files} if hub_files is not None else {}))
    return register_model(dataclasses.replace(real, name=name, aliases=(), checkpoint=ckpt))


# --------------------------------------------------------------------------- key mapping and zoo facts
def test_timm_keys_shapes_and_order_equal_ours():
    for ours, theirs in TIMM_NAMES.items():
        with torch.device("meta"):
            a = splitattn.create_model(ours).state_dict()
            b = timm.create_model(theirs).state_dict()
        assert list(a) == list(b), ours
        assert all(a[k].shape == b[k].shape for k in a), ours


def test_zoo_hub_files_are_timms_hub_ids():
    with_hub = {name: get_entry(name).checkpoint.hub_files for name in list_models()
                if get_entry(name).checkpoint and get_entry(name).checkpoint.hub_files}
    assert set(with_hub) == set(TIMM_NAMES)
    for name, files in with_hub.items():
        cfg = timm.models.get_pretrained_cfg(TIMM_NAMES[name])  # timm's default tag for that architecture
        assert [f.repo_id for f in files] == [cfg.hf_hub_id], name
        assert files[0].filename == "model.safetensors" and files[0].keys == "timm" and files[0].sha256 is None
        assert files[0].repo_id not in get_entry(name).checkpoint.urls  # a separate source, never a mirror


def test_parse_hub_spec():
    assert parse_hub_spec("hf-hub:timm/resnest50d.in1k") == HubFile("timm/resnest50d.in1k")
    assert parse_hub_spec("hf-hub:a/b@v1.0") == HubFile("a/b", revision="v1.0")
    assert parse_hub_spec("hf-hub:a/b/sub/w.safetensors@refs/pr/1") == HubFile("a/b", "sub/w.safetensors", "refs/pr/1")
    for bad in ("hf-hub:timm", "hf-hub:/x", "hf-hub:a/b@", "hf-hub:a//b"):
        with pytest.raises(CheckpointError, match="expected hf-hub:OWNER/NAME"):
            parse_hub_spec(bad)
    assert HubFile("a/b", "x.bin", "v2").spec == "hf-hub:a/b/x.bin@v2"


# --------------------------------------------------------------------------- loading from the stand-in
def test_timm_weights_from_the_hub_equal_timms_model_and_logits(hub, tmp_path):
    theirs = randomize_(timm.create_model("resnest14d"), seed=3)
    hub.publish("timm/resnest14d.gluon_in1k", "model.safetensors", _safetensors_bytes(theirs.state_dict(), tmp_path))
    ours = splitattn.create_model("resnest14", pretrained="hf-hub:timm/resnest14d.gluon_in1k", progress=False).eval()
    mine = ours.state_dict()
    for key, value in theirs.state_dict().items():
        assert torch.equal(mine[key], value), key
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(images), theirs(images))


def test_pretrained_true_falls_back_from_dead_official_urls_to_the_hub(hub, tmp_path):
    state = _tiny_state(1)
    data = _safetensors_bytes(state, tmp_path)
    hub.publish("timm/resnest14d.gluon_in1k", "model.safetensors", data)
    entry = _entry_with_dead_urls("test_hub_fallback")
    try:
        model = splitattn.create_model(entry.name)
        report = load_weights(model, True, entry=entry, progress=False)
    finally:
        unregister_model(entry.name)
    assert any("Hugging Face Hub copy hf-hub:timm/resnest14d.gluon_in1k" in note for note in report.notes)
    served = load_file(str(tmp_path / "w.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in served.items())
    assert [m for m, _ in hub.requests] == ["HEAD", "GET"]
    blob = next((hub.cache / "models--timm--resnest14d.gluon_in1k" / "blobs").iterdir())
    assert blob.name == hashlib.sha256(data).hexdigest()  # the cache names it by the Hub's LFS sha256


def test_official_url_is_tried_first_and_hub_only_on_request(hub, server, home, tmp_path):
    state = _tiny_state(2)
    torch.save(state, Path(server.root) / "tiny.pth")
    hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(3), tmp_path))
    real = get_entry("resnest14")
    ckpt = Checkpoint("tiny.pth", hashlib.sha256((Path(server.root) / "tiny.pth").read_bytes()).hexdigest()[:8],
                      (f"{server.url}/tiny.pth",), hub_files=(HubFile("test/tiny"),))
    entry = register_model(dataclasses.replace(real, name="test_hub_order", aliases=(), checkpoint=ckpt))
    try:
        official = splitattn.create_model(entry.name, pretrained=True, progress=False)
        assert hub.requests == [] and torch.equal(official.state_dict()["fc.weight"], state["fc.weight"])
        from_hub = splitattn.create_model(entry.name, pretrained="hf-hub", progress=False)
        assert torch.equal(from_hub.state_dict()["fc.weight"], _tiny_state(3)["fc.weight"])
    finally:
        unregister_model(entry.name)
    with pytest.raises(CheckpointError, match="no Hugging Face Hub copy is known for resnest50_fast_1s1x64d"):
        splitattn.create_model("resnest50_fast_1s1x64d", pretrained="hf-hub")


def test_revision_branch_tag_and_commit(hub, tmp_path):
    first = hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(4), tmp_path))
    hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(5), tmp_path))  # main moves on
    hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(6), tmp_path), revision="v2")
    for spec, seed in [("hf-hub:test/tiny", 5), ("hf-hub:test/tiny@v2", 6), (f"hf-hub:test/tiny@{first}", 4)]:
        model = splitattn.create_model("resnest14", pretrained=spec, progress=False)
        assert torch.equal(model.state_dict()["fc.weight"], _tiny_state(seed)["fc.weight"]), spec


def test_offline_uses_the_cache_and_otherwise_names_the_fix(hub, tmp_path, monkeypatch):
    hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(7), tmp_path))
    splitattn.create_model("resnest14", pretrained="hf-hub:test/tiny", progress=False)
    _set(monkeypatch, "HF_HUB_OFFLINE", "1", "HF_HUB_OFFLINE", True)
    seen = len(hub.requests)
    model = splitattn.create_model("resnest14", pretrained="hf-hub:test/tiny", progress=False)
    assert len(hub.requests) == seen and torch.equal(model.state_dict()["fc.bias"], _tiny_state(7)["fc.bias"])
    with pytest.raises(CheckpointError) as err:
        splitattn.create_model("resnest14", pretrained="hf-hub:test/other", progress=False)
    message = str(err.value)
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert "splitattn download NAME --source hf-hub" in message and "\n" not in message
    assert len(hub.requests) == seen


def test_offline_zoo_fallback_reports_both_sources(hub, home, monkeypatch):
    _set(monkeypatch, "HF_HUB_OFFLINE", "1", "HF_HUB_OFFLINE", True)
    entry = _entry_with_dead_urls("test_hub_offline")
    try:
        with pytest.raises(CheckpointError) as err:
            splitattn.create_model(entry.name, pretrained=True, progress=False)
    finally:
        unregister_model(entry.name)
    message = str(err.value)
    assert "could not download gluon_resnest14-9c8fe254.pth" in message
    assert "hf-hub:timm/resnest14d.gluon_in1k: model.safetensors of timm/resnest14d.gluon_in1k @ main is not in" \
           in message


def test_corrupt_transfer_is_caught_by_the_lfs_sha256_and_deleted(hub, tmp_path):
    hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(8), tmp_path))
    hub.corrupt.add("model.safetensors")
    with pytest.raises(CheckpointError, match=r"sha256 \w+… does not match the Hub's LFS sha256 .*deleted"):
        splitattn.create_model("resnest14", pretrained="hf-hub:test/tiny", progress=False)
    blobs = hub.cache / "models--test--tiny" / "blobs"
    assert not any(blobs.iterdir())
    hub.corrupt.clear()
    model = splitattn.create_model("resnest14", pretrained="hf-hub:test/tiny", progress=False)
    assert torch.equal(model.state_dict()["fc.weight"], _tiny_state(8)["fc.weight"])


def test_known_sha256_is_checked(hub, tmp_path):
    data = _safetensors_bytes(_tiny_state(9), tmp_path)
    hub.publish("timm/resnest14d.gluon_in1k", "model.safetensors", data)
    entry = _entry_with_dead_urls("test_hub_sha", hub_files=(HubFile("timm/resnest14d.gluon_in1k", sha256="0" * 64),))
    try:
        with pytest.raises(CheckpointError, match="does not match the zoo's sha256 0000"):
            splitattn.create_model(entry.name, pretrained="hf-hub", progress=False)
    finally:
        unregister_model(entry.name)
    good = _entry_with_dead_urls("test_hub_sha_ok", hub_files=(
        HubFile("timm/resnest14d.gluon_in1k", sha256=hashlib.sha256(data).hexdigest()),))
    try:
        splitattn.create_model(good.name, pretrained="hf-hub", progress=False)
    finally:
        unregister_model(good.name)


@pytest.mark.parametrize("spec,match", [
    ("hf-hub:nobody/nothing", "repository nobody/nothing not found"),
    ("hf-hub:test/tiny@v9", "revision 'v9' does not exist in test/tiny"),
    ("hf-hub:test/tiny/other.safetensors", "the repository has no file 'other.safetensors'"),
])
def test_hub_errors_are_one_line(hub, tmp_path, spec, match):
    hub.publish("test/tiny", "model.safetensors", _safetensors_bytes(_tiny_state(10), tmp_path))
    with pytest.raises(CheckpointError, match=match) as err:
        splitattn.create_model("resnest14", pretrained=spec, progress=False)
    assert "\n" not in str(err.value)


def test_missing_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(MissingDependency, match=r"pip install 'splitattn\[hub\]'"):
        splitattn.create_model("resnest14", pretrained="hf-hub:timm/resnest14d.gluon_in1k")


def test_cli_download_from_the_hub(hub, tmp_path, capsys):
    hub.publish("timm/resnest14d.gluon_in1k", "model.safetensors", _safetensors_bytes(_tiny_state(11), tmp_path))
    assert main(["download", "resnest14", "--source", "hf-hub"]) == 0
    path = Path(capsys.readouterr().out.split(": ", 1)[1].strip())
    assert path.is_relative_to(hub.cache) and path.name == "model.safetensors"
    assert main(["info", "resnest14"]) == 0
    assert "hf-hub:timm/resnest14d.gluon_in1k" in capsys.readouterr().out
