"""The segmentation zoo: every released PyTorch-Encoding and mmseg ResNeSt checkpoint's architecture loads that
file's keys (built by the oracle itself) strictly, and ``create_segmenter(pretrained=...)`` downloads (local HTTP
server), checks (SHA-1 inside Encoding's zips, sha256 prefix for mmseg) and loads a file."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile

import pytest
import torch

from splitattn.cli import main
from splitattn.models.weights import CheckpointError
from splitattn.segmentation import create_segmenter
from splitattn.segmentation import zoo as segmentation_zoo
from splitattn.segmentation.convert import from_encoding, from_mmseg
from splitattn.segmentation.zoo import SEGMENTATION_ZOO, list_segmenters, segmenter_kwargs
from tests.oracles.encoding_models import build_encoding, require_encoding
from tests.oracles.mmseg_models import build_mmseg

ENCODING_ROWS = list_segmenters("encoding")
MMSEG_ROWS = list_segmenters("mmseg")


def test_every_released_checkpoint_is_in_the_zoo():
    # torch-encoding 1.2.1 model_store.py lists 10 ResNeSt segmenters; mmseg's resnest/metafile.yaml 8
    assert len(ENCODING_ROWS) == 10 and len(MMSEG_ROWS) == 8
    require_encoding()  # registers the encoding.lib stand-in before anything imports encoding
    import encoding.models.model_store as store

    for name in ENCODING_ROWS:
        row = SEGMENTATION_ZOO[name]
        model = "deeplab" if row.kind == "deeplabv3" else row.kind
        acronym = {"ade20k": "ade", "pcontext": "pcontext"}[row.dataset]
        assert store._model_sha1[f"{model}_{row.backbone}_{acronym}"] == row.sha1
        assert row.filename == f"{model}_{row.backbone}_{acronym}-{row.sha1[:8]}.pth"
        assert all(u.endswith(row.archive) for u in row.urls) and row.mean_iou > 40
    for name in MMSEG_ROWS:
        row = SEGMENTATION_ZOO[name]
        assert row.urls[0].endswith(row.filename) and row.filename.endswith(f"-{row.sha256_prefix}.pth")
        assert row.mean_iou_ms > row.mean_iou > 40


@pytest.mark.parametrize("name", ENCODING_ROWS)
def test_encoding_checkpoint_layout_loads_strictly(name):
    row = SEGMENTATION_ZOO[name]
    oracle = build_encoding(row.kind, row.backbone, row.num_classes)
    assert oracle.nclass == row.num_classes
    state, _ = from_encoding(oracle.state_dict())
    assert len(state) == len(oracle.state_dict())
    create_segmenter(**segmenter_kwargs(row), progress=False).load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", MMSEG_ROWS)
def test_mmseg_checkpoint_layout_loads_strictly(name):
    row = SEGMENTATION_ZOO[name]
    oracle, cfg = build_mmseg(row.kind, row.dataset)
    assert cfg.model.decode_head.num_classes == row.num_classes
    checkpoint = {"meta": {"mmseg_version": "0.5.0"}, "state_dict": oracle.state_dict()}
    state, _ = from_mmseg(checkpoint)
    create_segmenter(**segmenter_kwargs(row), progress=False).load_state_dict(state, strict=True)


def _small_state(flavour: str) -> dict[str, torch.Tensor]:
    """A converted-layout FCN on a tiny backbone, as the published file would hold it (Encoding's / mmseg's names)."""
    torch.manual_seed(0)
    model = create_segmenter("fcn", "resnest50", 59, flavour=flavour, base_planes=8, stem_width=8)
    return model.state_dict()


@pytest.fixture
def served_encoding(server, home, monkeypatch):
    """The FCN ResNeSt-50 Pascal Context row, pointed at a zip on the local server holding an Encoding-layout file."""
    row = SEGMENTATION_ZOO["fcn_resnest50_pcontext_encoding"]
    ours = _small_state("encoding")
    encoding_names = {("pretrained." + k[len("backbone."):] if k.startswith("backbone.") else
                       k.replace("aux_head.", "auxlayer.conv5.", 1) if k.startswith("aux_head.") else
                       k.replace("head.", "head.conv5.", 1)): v for k, v in ours.items()}
    pth = home.parent / row.filename
    torch.save(encoding_names, pth)
    sha1 = hashlib.sha1(pth.read_bytes()).hexdigest()
    with zipfile.ZipFile(f"{server.root}/{row.archive}", "w") as zf:
        zf.write(pth, row.filename)
    served = dataclasses.replace(row, urls=(f"{server.url}/{row.archive}",), sha1=sha1)
    monkeypatch.setattr(segmentation_zoo, "SEGMENTATION_ZOO", {**SEGMENTATION_ZOO, row.name: served})
    return served, ours


def test_pretrained_encoding_row_downloads_checks_and_loads(served_encoding, server, home):
    row, ours = served_encoding
    model = create_segmenter(pretrained=row.name, base_planes=8, stem_width=8, progress=False)
    assert model.kind == "fcn" and model.num_classes == 59 and model.flavour == "encoding"
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())
    cached = home / "checkpoints" / row.filename
    assert cached.is_file() and not (home / "checkpoints" / row.archive).exists()  # the zip is not kept
    requests = len(server.requests)
    create_segmenter(pretrained=row.name, base_planes=8, stem_width=8, progress=False)
    assert len(server.requests) == requests  # served from the cache


def test_pretrained_encoding_row_with_a_wrong_sha1_keeps_nothing(served_encoding, home, monkeypatch):
    row, _ = served_encoding
    monkeypatch.setattr(segmentation_zoo, "SEGMENTATION_ZOO",
                        {row.name: dataclasses.replace(row, sha1="0" * 40)})
    with pytest.raises(CheckpointError, match="SHA-1"):
        create_segmenter(pretrained=row.name, base_planes=8, stem_width=8, progress=False)
    assert not any((home / "checkpoints").iterdir())


def test_pretrained_rejects_disagreeing_arguments_and_unknown_names():
    with pytest.raises(ValueError, match="num_classes=150 model, not 19"):
        create_segmenter(pretrained="deeplabv3_resnest50_ade20k_encoding", num_classes=19)
    with pytest.raises(ValueError, match="Did you mean deeplabv3_resnest50_ade20k_encoding"):
        create_segmenter(pretrained="deeplabv3_resnest50_ade20k_encodin")


def test_pretrained_path_in_mmseg_layout_and_convert_cli(tmp_path, capsys):
    ours = _small_state("mmseg")
    mmseg_names = {("decode_head." + k[5:] if k.startswith("head.") else
                    "auxiliary_head." + k[9:] if k.startswith("aux_head.") else k): v for k, v in ours.items()}
    # mmseg's backbone names: convert ours to OpenMMLab's with the backbone converter, as its files hold them
    from splitattn.models.key_converters import from_official

    body = {k[len("backbone."):]: v for k, v in ours.items() if k.startswith("backbone.")}
    mmseg_names = {k: v for k, v in mmseg_names.items() if not k.startswith("backbone.")}
    mmseg_names.update(from_official(body, "mmdet", prefix="backbone."))
    src = tmp_path / "fcn_mmseg.pth"
    torch.save({"meta": {}, "state_dict": mmseg_names}, src)
    model = create_segmenter("fcn", "resnest50", 59, pretrained=str(src), base_planes=8, stem_width=8,
                             progress=False)
    assert model.flavour == "mmseg"
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())
    dst = tmp_path / "fcn_ours.pth"
    assert main(["convert", str(src), str(dst), "--segmenter"]) == 0
    assert "flavour='mmseg'" in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)
    assert converted.keys() == ours.keys()
    ours_encoding = tmp_path / "fcn_encoding_ours.pth"
    torch.save(_small_state("encoding"), ours_encoding)
    with pytest.raises(ValueError, match="holds a encoding-flavour segmenter, not 'mmseg'"):
        create_segmenter("fcn", "resnest50", 59, pretrained=str(ours_encoding), flavour="mmseg")


def test_list_task_segment(capsys):
    assert main(["list", "--task", "segment"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SEGMENTATION_ZOO) and "48.36" in out and "80.51" in out


def test_segment_eval_and_predict_with_a_pretrained_row(server, home, monkeypatch, tmp_path, capsys):
    """The CLI end to end on a real Pascal Context-layout photo: the row's file is served (as Encoding's zip), the
    released architecture is built at full size, loaded strictly and evaluated / run on the photo."""
    from tests.test_segmentation_data import _write_pcontext, load_voc_photo

    row = SEGMENTATION_ZOO["fcn_resnest50_pcontext_encoding"]
    oracle = build_encoding("fcn", "resnest50", 59)
    pth = tmp_path / row.filename
    torch.save(oracle.state_dict(), pth)
    with zipfile.ZipFile(f"{server.root}/{row.archive}", "w", zipfile.ZIP_STORED) as zf:
        zf.write(pth, row.filename)
    served = dataclasses.replace(row, urls=(f"{server.url}/{row.archive}",),
                                 sha1=hashlib.sha1(pth.read_bytes()).hexdigest())
    monkeypatch.setattr(segmentation_zoo, "SEGMENTATION_ZOO", {row.name: served})
    data = load_voc_photo()
    import numpy as np

    rgb = np.ascontiguousarray(np.asarray(data["rgb"], np.uint8)[:160, :200])
    label = np.ascontiguousarray(np.asarray(data["class_label"], np.uint8)[:160, :200])
    voc2010 = tmp_path / "VOCdevkit" / "VOC2010"
    _write_pcontext(voc2010, rgb, label)
    report = tmp_path / "eval.json"
    assert main(["segment", "eval", "--pretrained", row.name, "--root", str(tmp_path), "--scales", "1",
                 "--no-flip", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert f"{row.name} on pcontext val: pixAcc" in out and "published: mIoU 51.98%" in out
    import json

    record = json.loads(report.read_text())
    assert record["protocol"]["scales"] == [1.0] and record["protocol"]["combine"] == "encoding"
    assert 0 <= record["pixAcc"] <= 1 and record["protocol"]["crop_size"] == 480
    assert main(["segment", "predict", "--pretrained", row.name, str(voc2010 / "JPEGImages" / "2008_000002.jpg"),
                 "--out-dir", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "2008_000002_segmentation.png").is_file()
    assert main(["segment", "predict", "--pretrained", row.name, "--checkpoint", "x.pth", "a.jpg"]) == 2
    assert "needs one of --checkpoint" in capsys.readouterr().err
    assert main(["segment", "predict", "--pretrained", "model.pth", "a.jpg"]) == 2
    assert "unknown segmentation checkpoint 'model.pth'" in capsys.readouterr().err


def test_files_without_bn_counters_load_and_missing_weights_do_not(tmp_path):
    ours = _small_state("encoding")
    old_style = tmp_path / "no_counters.pth"
    torch.save({k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}, old_style)
    model = create_segmenter("fcn", "resnest50", 59, pretrained=str(old_style), base_planes=8, stem_width=8,
                             progress=False)
    assert any("num_batches_tracked" in note for note in model.notes)
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items() if not k.endswith("tracked"))
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in ours.items() if k != "head.4.weight"}, broken)
    with pytest.raises(CheckpointError, match="does not fit a fcn .* Missing key.*head.4.weight"):
        create_segmenter("fcn", "resnest50", 59, pretrained=str(broken), base_planes=8, stem_width=8,
                         progress=False)
