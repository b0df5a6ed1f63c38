"""Checkpoint download, cache and loading, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

import splitattn
from splitattn.models.weights import CheckpointError, atomic_save, cache_dir, read_checkpoint_file, read_state_dict
from splitattn.models.zoo import Checkpoint, ModelEntry, get_entry, register_model, unregister_model


def _dead_url() -> str:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _publish(server, name="tiny") -> tuple[str, str, dict]:
    """Save a real resnest14 checkpoint into the served folder under a hash-stamped name."""
    state = splitattn.create_model("resnest14").state_dict()
    tmp = Path(server.root) / "tmp.pth"
    torch.save(state, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    filename = f"{name}-{sha[:8]}.pth"
    tmp.rename(Path(server.root) / filename)
    return filename, sha[:8], state


@pytest.fixture
def tiny_entry(server):
    filename, sha, state = _publish(server)
    created = []

    def make(urls):
        entry = ModelEntry(name=f"test_tiny_{len(created)}", description="test", arch=get_entry("resnest14").arch,
                           train_crop=224, eval=get_entry("resnest14").eval,
                           checkpoint=Checkpoint(filename, sha, tuple(urls)))
        created.append(register_model(entry).name)
        return entry

    yield make, filename, state
    for name in created:
        unregister_model(name)


def _leftovers(home: Path) -> list[str]:
    folder = home / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_caches_and_loads(server, home, tiny_entry):
    make, filename, state = tiny_entry
    entry = make([f"{server.url}/{filename}"])
    model = splitattn.create_model(entry.name, pretrained=True, progress=False)
    assert cache_dir() == home / "checkpoints" and _leftovers(home) == [filename]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    hits = len(server.requests)
    splitattn.create_model(entry.name, pretrained=True, progress=False)
    assert len(server.requests) == hits, "a cached, verified file must not be downloaded again"


def test_falls_back_to_the_next_url_and_honours_mirrors(server, home, tiny_entry, monkeypatch):
    make, filename, _ = tiny_entry
    entry = make([f"{_dead_url()}/{filename}", f"{server.url}/missing/{filename}", f"{server.url}/{filename}"])
    splitattn.create_model(entry.name, pretrained=True, progress=False)
    assert server.requests == [f"/missing/{filename}", f"/{filename}"]

    (home / "checkpoints" / filename).unlink()
    monkeypatch.setenv("SPLITATTN_MIRRORS", f"{server.url}/")
    entry2 = make([f"{_dead_url()}/{filename}"])
    splitattn.create_model(entry2.name, pretrained=True, progress=False)
    assert server.requests[-1] == f"/{filename}"


def test_hash_mismatch_is_an_error_and_leaves_nothing(server, home, tiny_entry):
    make, filename, _ = tiny_entry
    wrong = filename.replace(filename[-12:-4], "deadbeef")
    (Path(server.root) / wrong).write_bytes((Path(server.root) / filename).read_bytes())
    entry = ModelEntry(name="test_wrong_hash", description="t", arch=get_entry("resnest14").arch, train_crop=224,
                       eval=get_entry("resnest14").eval,
                       checkpoint=Checkpoint(wrong, "deadbeef", (f"{server.url}/{wrong}",)))
    register_model(entry)
    try:
        with pytest.raises(CheckpointError, match=r"sha256 .* does not start with the expected deadbeef"):
            splitattn.create_model("test_wrong_hash", pretrained=True, progress=False)
    finally:
        unregister_model("test_wrong_hash")
    assert _leftovers(home) == []


def test_truncated_transfer_leaves_nothing(server, home, tiny_entry):
    make, filename, _ = tiny_entry
    entry = make([f"{server.url}/truncated/{filename}"])
    with pytest.raises(CheckpointError, match="could not download"):
        splitattn.create_model(entry.name, pretrained=True, progress=False)
    assert _leftovers(home) == []


def test_offline_error_says_where_to_put_the_file(home, tiny_entry):
    make, filename, _ = tiny_entry
    entry = make([f"{_dead_url()}/{filename}"])
    with pytest.raises(CheckpointError) as err:
        splitattn.create_model(entry.name, pretrained=True, progress=False)
    message = str(err.value)
    assert f"put it at {home / 'checkpoints' / filename}" in message
    assert "pretrained='/path/to/" in message and "SPLITATTN_MIRRORS" in message


def test_corrupt_cached_file_is_replaced(server, home, tiny_entry):
    make, filename, state = tiny_entry
    entry = make([f"{server.url}/{filename}"])
    (home / "checkpoints").mkdir(parents=True)
    (home / "checkpoints" / filename).write_bytes(b"not a checkpoint")
    model = splitattn.create_model(entry.name, pretrained=True, progress=False)
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])


def test_pretrained_url_and_local_path(server, home, tiny_entry, tmp_path):
    _, filename, state = tiny_entry
    model = splitattn.create_model("resnest14", pretrained=f"{server.url}/{filename}", progress=False)
    assert torch.equal(model.state_dict()["fc.bias"], state["fc.bias"])
    local = home / "checkpoints" / filename
    assert local.is_file()
    model = splitattn.create_model("resnest14", pretrained=str(local))
    assert torch.equal(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    with pytest.raises(CheckpointError, match="does not exist"):
        splitattn.create_model("resnest14", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="no released checkpoint is known for resnet50d"):
        splitattn.create_model("resnet50d", pretrained=True)


# ------------------------------------------------------------------ reading and matching
def test_refuses_pickled_code(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"weight": torch.zeros(2), "hook": print}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects.*weights_only=True"):
        read_state_dict(path)


def test_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(splitattn.create_model("resnest14").state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a checkpoint: its zip archive is truncated or corrupt"):
        read_state_dict(cut)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_state_dict(tmp_path / "list.pth")


@pytest.mark.parametrize("content,message", [
    (b"", "is empty (0 bytes): not a checkpoint"),  # was an IndexError
    (b"hello world\n", "is not a checkpoint: it holds text ('hello world'"),  # was a KeyError
    (b"PK\x03\x04 not really a zip", "is not a checkpoint: its zip archive is truncated or corrupt"),
    (bytes(range(256)) * 4, "is not a checkpoint: its bytes are not a PyTorch checkpoint"),
])
def test_files_that_are_not_checkpoints_are_named_as_such(tmp_path, content, message):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint_file(tmp_path)


def _torch_zip_writer_on_a_full_disk(obj, handle):
    """What torch.save raises when the disk fills mid-write (seen on a full tmpfs): a RuntimeError from its zip
    writer, no errno."""
    handle.write(b"partial bytes")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pth"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", _torch_zip_writer_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(CheckpointError, match=r"the disk is full \(0.0 MiB free\); the previous last.pth is intact"):
        atomic_save({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temporary file left behind


def test_other_write_failures_and_interrupts_leave_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"

    def fails(obj, handle):
        handle.write(b"partial")
        raise ValueError("cannot pickle this")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(CheckpointError, match="could not write .*last.pth: ValueError: cannot pickle this"):
        atomic_save({"w": torch.ones(1)}, path)

    def interrupted(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.ones(1)}, path)
    assert list(tmp_path.iterdir()) == []


def test_a_really_full_disk(tmp_path):
    """On a 256 KiB tmpfs (root can mount one; CI runs as root): torch's own error becomes the full-disk message."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}); the simulated test above ran")
    try:
        atomic_save({"w": torch.ones(1000)}, mount / "last.pth")
        with pytest.raises(CheckpointError, match=r"the disk is full .*; the previous last.pth is intact"):
            atomic_save({"w": torch.ones(200_000)}, mount / "last.pth")
        assert [p.name for p in mount.iterdir()] == ["last.pth"]
        assert torch.load(mount / "last.pth", weights_only=True)["w"].shape == (1000,)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_wrapped_and_ddp_checkpoints_unwrap(tmp_path):
    state = splitattn.create_model("resnest14").state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    assert set(read_state_dict(tmp_path / "w.pth")) == set(state)


def test_mismatch_report_lists_keys_and_leaves_model_untouched():
    source = splitattn.create_model("resnest14").state_dict()
    target = splitattn.create_model("resnest26")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        splitattn.load_weights(target, source)
    message = str(err.value)
    assert "missing from the checkpoint" in message and "layer1.1.conv1.weight" in message
    assert "Fix:" in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())

    with pytest.raises(CheckpointError, match=r"shape mismatch .*conv2.conv.weight"):
        splitattn.load_weights(splitattn.create_model("resnest50_fast_4s2x40d"),
                               splitattn.create_model("resnest50_fast_2s2x40d").state_dict())


def test_num_classes_mismatch(tmp_path):
    path = tmp_path / "imagenet.pth"
    torch.save(splitattn.create_model("resnest14").state_dict(), path)
    model = splitattn.create_model("resnest14", num_classes=10)
    with pytest.raises(CheckpointError, match=r"checkpoint has 1000 classes, model has 10: pass num_classes=1000, "
                                              r"or load with head=False"):
        splitattn.load_weights(model, path)
    with pytest.warns(UserWarning, match=r"1000 classes, model has 10: loaded the backbone.*10-way fc"):
        model = splitattn.create_model("resnest14", pretrained=str(path), num_classes=10)
    assert model.fc.weight.shape == (10, 2048)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone = splitattn.create_model("resnest14", pretrained=str(path), features_only=True)
    assert not hasattr(backbone.fc, "weight")


def test_grayscale_stem_is_adapted_exactly(tmp_path):
    rgb = splitattn.create_model("resnest14").eval()
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    with pytest.warns(UserWarning, match="adapted the checkpoint.s 3-channel stem to 1 channels"):
        gray = splitattn.create_model("resnest14", pretrained=str(path), in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-5)


def test_cli_download(server, home, tiny_entry, capsys):
    from splitattn.cli import main

    make, filename, _ = tiny_entry
    ok = make([f"{server.url}/{filename}"])
    assert main(["download", ok.name]) == 0
    assert f"{ok.name}: {home / 'checkpoints' / filename}" in capsys.readouterr().out
    (home / "checkpoints" / filename).unlink()
    offline = make([f"{_dead_url()}/{filename}"])
    assert main(["download", offline.name]) == 2
    assert "put it at" in capsys.readouterr().err
