"""safetensors wherever a state_dict is read or written: loading, `splitattn convert`, errors, optional package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import splitattn
from splitattn.cli import main
from splitattn.models.key_converters import from_official
from splitattn.models.weights import CheckpointError, atomic_save, is_safetensors, read_state_dict
from splitattn.optional import MissingDependency
from splitattn.segmentation import create_segmenter


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return splitattn.create_model("resnest14").state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(64)


def test_convert_pth_to_safetensors_round_trip(state, tmp_path, capsys):
    torch.save({"state_dict": state}, tmp_path / "src.pth")
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "src.pth"), str(dst)]) == 0
    assert "(safetensors)" in capsys.readouterr().out and is_safetensors(_head(dst))
    assert _same(load_file(str(dst)), state)
    model = splitattn.create_model("resnest14", pretrained=str(dst))  # strict load
    assert _same(model.state_dict(), state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "src.pth"]  # no temp file left


def test_convert_to_flag_and_back_to_pth(state, tmp_path):
    save_file(from_official(state, "detectron2", prefix="backbone.bottom_up."), str(tmp_path / "d2.safetensors"))
    named_pth = tmp_path / "ours.pth"
    assert main(["convert", str(tmp_path / "d2.safetensors"), str(named_pth), "--to", "safetensors"]) == 0
    assert is_safetensors(_head(named_pth)) and _same(read_state_dict(named_pth), state)  # read by header, any name
    back = tmp_path / "back.pth"
    assert main(["convert", str(named_pth), str(back), "--to", "pth"]) == 0
    assert _head(back).startswith(b"PK") and _same(torch.load(back, weights_only=True), state)


def test_convert_refuses_to_overwrite(state, tmp_path, capsys):
    torch.save(state, tmp_path / "src.pth")
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"keep me")
    assert main(["convert", str(tmp_path / "src.pth"), str(dst)]) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"
    assert main(["convert", str(tmp_path / "src.pth"), str(dst), "--overwrite"]) == 0
    assert _same(load_file(str(dst)), state)


def test_segmenter_convert_writes_safetensors(tmp_path):
    torch.manual_seed(0)
    ours = create_segmenter("fcn", "resnest50", 59, base_planes=8, stem_width=8).state_dict()
    save_file(ours, str(tmp_path / "seg.safetensors"))
    assert main(["convert", str(tmp_path / "seg.safetensors"), str(tmp_path / "out.safetensors"), "--segmenter"]) == 0
    assert _same(load_file(str(tmp_path / "out.safetensors")), ours)


def test_failed_write_keeps_the_previous_file(state, tmp_path, monkeypatch):
    import safetensors.torch

    dst = tmp_path / "w.safetensors"
    atomic_save(state, dst)
    before = dst.read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("device error")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(CheckpointError, match=r"could not write .*w\.safetensors: OSError: device error; the previous"):
        atomic_save(state, dst)
    assert dst.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_only_a_flat_tensor_dict_becomes_safetensors(state, tmp_path):
    with pytest.raises(CheckpointError, match="holds only a flat dict of tensors.*Save it as .pth"):
        atomic_save({"model": state, "epoch": 3}, tmp_path / "ckpt.safetensors")
    assert not list(tmp_path.iterdir())
    shared = torch.randn(4, 4)
    atomic_save({"a": shared, "b": shared, "c": shared[1]}, tmp_path / "tied.safetensors")  # tied weights: copied
    back = load_file(str(tmp_path / "tied.safetensors"))
    assert torch.equal(back["a"], shared) and torch.equal(back["b"], shared) and torch.equal(back["c"], shared[1])


@pytest.mark.parametrize("damage,cause", [
    (lambda raw: raw[: len(raw) // 2], r"it is truncated: its tensors need \d+ bytes after the header, the file has"),
    (lambda raw: raw[:100], r"it is truncated: the header alone needs \d+ bytes"),
    (lambda raw: raw[:8] + b"{not json" + raw[17:], "its JSON header is corrupt"),
    (lambda raw: b"just some text, not weights", r"neither a safetensors file .* it holds text"),
])
def test_damaged_safetensors_name_the_cause(state, tmp_path, damage, cause):
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(CheckpointError, match=cause) as err:
        splitattn.create_model("resnest14", pretrained=str(bad))
    assert "Save or download it again" in str(err.value) and "\n" not in str(err.value)


def test_safetensors_downloaded_by_url(state, server, home):
    save_file(state, os.path.join(server.root, "tiny.safetensors"))
    model = splitattn.create_model("resnest14", pretrained=f"{server.url}/tiny.safetensors", progress=False)
    assert _same(model.state_dict(), state)


def test_missing_safetensors_names_the_extra(state, tmp_path, monkeypatch):
    save_file(state, str(tmp_path / "w.safetensors"))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    for action in (lambda: read_state_dict(tmp_path / "w.safetensors"),
                   lambda: atomic_save(state, tmp_path / "x.safetensors")):
        with pytest.raises(MissingDependency, match=r"needs safetensors.*pip install 'splitattn\[hub\]'"):
            action()
    assert not (tmp_path / "x.safetensors").exists()


def test_core_works_without_safetensors_and_huggingface_hub(tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('safetensors', 'huggingface_hub'):\n"
        "            raise ImportError(f'blocked {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import splitattn, torch\n"
        "from splitattn.models.weights import atomic_save\n"
        f"atomic_save(splitattn.create_model('resnest14').state_dict(), r'{tmp_path / 'w.pth'}')\n"
        f"splitattn.create_model('resnest14', pretrained=r'{tmp_path / 'w.pth'}')\n"
        "assert not any(m.split('.')[0] in ('safetensors', 'huggingface_hub') for m in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
