"""Semantic segmentation: the dilated backbone equals the official dilated mode, DeepLabV3 / FCN heads,
a short training on real-object scenes, the CLI, and bad input."""

from __future__ import annotations

import json

import pytest
import resnest.torch as official
import torch

from benchmarks.scenes.generator import make_scenes
from splitattn.cli import main
from splitattn.engine.config import ConfigError
from splitattn.segmentation import create_segmenter
from splitattn.segmentation.config import load_segment_config
from splitattn.segmentation.task import poly_learning_rate
from tests.conftest import max_rel_diff, randomize_

# A compact DeepLabV3+ (aux head) on the 64 px scenes: the folder dataset reads their semantic maps
SMALL_DEEPLAB = ["model.kind=deeplabv3plus", "model.backbone=resnest14", "model.pretrained_backbone=false",
                 "model.overrides.base_planes=16", "model.overrides.stem_width=16", "model.overrides.stem_stride=2",
                 "model.output_stride=16", "model.head_channels=64", "model.norm=bn", "data.dataset=folder",
                 "data.num_classes=11", "data.label_dir=semantic", "data.scale_range=[0.75,1.5]", "data.workers=0",
                 "optim.lr=0.01", "engine.device=cpu", "engine.amp=bf16", "engine.progress=false"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_scenes")
    make_scenes(root, num_train=48, num_val=8, size=64, object_size=(20, 40), seed=5, progress=False)
    return root


@pytest.mark.parametrize("output_stride,official_kwargs", [(8, {"dilated": True}), (16, {"dilation": 2})])
def test_segmenter_backbone_equals_official_dilated_mode(tmp_path, output_stride, official_kwargs):
    theirs = randomize_(official.resnest50(**official_kwargs), seed=4)
    path = tmp_path / "official.pth"
    torch.save(theirs.state_dict(), path)
    model = create_segmenter("deeplabv3", "resnest50", num_classes=5, output_stride=output_stride,
                             pretrained_backbone=str(path), norm="bn").eval()
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        c4, c5 = model.backbone((x - model.mean) / model.std)[-2:]
        t = theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1((x - model.mean) / model.std))))
        t3 = theirs.layer3(theirs.layer2(theirs.layer1(t)))
        t4 = theirs.layer4(t3)
        out = model(x)
    assert c4.shape[-1] == c5.shape[-1] == 96 // output_stride
    assert max_rel_diff(t3, c4) <= 1e-5 and max_rel_diff(t4, c5) <= 1e-5
    assert out["out"].shape == out["aux"].shape == (1, 5, 96, 96)


def test_heads_are_the_papers():
    model = create_segmenter("deeplabv3", "resnest14", num_classes=7, output_stride=8, base_planes=16)
    aspp = model.head[0]
    rates = [m[0].dilation[0] for m in aspp.convs[1:4]]
    assert rates == [12, 24, 36] and aspp.convs[0][0].out_channels == 256
    assert create_segmenter("deeplabv3", "resnest14", num_classes=7, output_stride=16,
                            base_planes=16).head[0].convs[1][0].dilation[0] == 6
    small_map = create_segmenter("deeplabv3", "resnest14", num_classes=7, output_stride=16, base_planes=16,
                                 atrous_rates=(2, 4, 6)).head[0]
    assert [m[0].dilation[0] for m in small_map.convs[1:4]] == [2, 4, 6]
    fcn = create_segmenter("fcn", "resnest14", num_classes=7, aux=False, base_planes=16)
    assert fcn.aux_head is None and fcn.head[-1].out_channels == 7
    assert model.aux_head[0].in_channels == 4 * 16 * 4  # layer3 output (C4)


def test_deeplabv3plus_decoder_reads_the_stride4_map():
    """Chen et al. 2018: ASPP on C5, decoder on the stride-4 map (C2 with the standard stem, C3 with a
    stride-2 stem) projected to 48 channels, two 3×3 convs, logits at the input size."""
    standard = create_segmenter("deeplabv3plus", "resnest14", num_classes=7, output_stride=16, base_planes=16)
    compact = create_segmenter("deeplabv3plus", "resnest14", num_classes=7, output_stride=16, base_planes=16,
                               stem_stride=2, head_channels=64)
    for model, low_module in ((standard, "layer1"), (compact, "layer2")):
        info = model.backbone.feature_info[model.low_index]
        assert info["reduction"] == 4 and info["module"] == low_module
        assert model.head.project_low[0].out_channels == 48
        assert model.head.project_low[0].in_channels == info["num_chs"]
    assert compact.head.aspp.convs[0][0].out_channels == 64 and compact.head.fuse[0].out_channels == 64
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = compact.eval()(x)
        # the decoder's input really is the stride-4 map: changing it changes the logits
        features = compact.backbone((x - compact.mean) / compact.std)
        low = features[compact.low_index]
        plain = compact.head(features[-1], low)
        other = compact.head(features[-1], torch.zeros_like(low))
    assert out["out"].shape == out["aux"].shape == (2, 7, 64, 64)
    assert low.shape[-1] == 16 and plain.shape[-1] == 16
    assert not torch.allclose(plain, other)


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride"):
        create_segmenter("deeplabv3", "resnest14", output_stride=32)
    with pytest.raises(ValueError, match="deeplabv3plus"):
        create_segmenter("unet")
    with pytest.raises(ValueError, match="flavour='mmseg'"):
        create_segmenter("pspnet")
    with pytest.raises(ValueError, match="unknown flavour"):
        create_segmenter("fcn", flavour="gluoncv")
    with pytest.raises(ValueError, match="head_channels"):
        create_segmenter("deeplabv3", "resnest14", head_channels=0)
    with pytest.raises(ValueError, match="atrous_rates"):
        create_segmenter("deeplabv3", "resnest14", atrous_rates=(0, 6, 12))
    with pytest.raises(ConfigError, match="atrous_rates"):
        load_segment_config(None, ["model.atrous_rates=[2,4]"])
    with pytest.raises(ValueError, match="resnest50"):
        create_segmenter("deeplabv3", "resnest5O")


def test_poly_schedule():
    assert poly_learning_rate(0, 0.01, 100, 0.9) == pytest.approx(0.01)
    assert poly_learning_rate(50, 0.01, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_learning_rate(0, 0.01, 100, 0.9, warmup_iters=10) == pytest.approx(0.001)


def test_overfitting_four_scenes_raises_miou(scenes):
    """The training path learns: 60 SGD steps on four real-object scenes lift mIoU far above the start."""
    from splitattn.segmentation import ConfusionMatrix, segmentation_loss
    from splitattn.segmentation import data as seg

    torch.manual_seed(0)
    dataset = seg.folder(scenes, "train", transform=seg.SegmentationEvalTransform(), num_classes=11,
                         label_dir="semantic")
    images, labels = (torch.stack(t) for t in zip(*[dataset[i] for i in range(4)]))
    model = create_segmenter("deeplabv3", "resnest14", num_classes=11, output_stride=16, norm="bn", base_planes=16,
                             stem_width=16, stem_stride=2, avd_first=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def miou() -> float:
        model.eval()
        with torch.no_grad():
            matrix = ConfusionMatrix(11)
            matrix.update(model(images)["out"].argmax(1), labels)
        model.train()
        return matrix.mean_iou()

    start = miou()
    for _ in range(60):
        loss = segmentation_loss(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = miou()
    print(f"overfit 4 scenes: mIoU {start:.3f} -> {end:.3f}")
    assert end > start + 0.3 and end > 0.5, (start, end)


def test_short_training_and_cli(scenes, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["segment", "train", *SMALL_DEEPLAB, f"data.root={scenes}", "data.base_size=64", "data.crop_size=64",
            "optim.batch_size=8", "optim.max_iters=40", "engine.eval_every_steps=20", "eval.final_scales=false",
            "engine.log_every_steps=5", f"engine.out_dir={out}",
            "--summary-json", str(tmp_path / "s.json")]
    assert main(args) == 0
    # The engine end to end (learning itself: test_overfitting_four_scenes_raises_miou; compile: test_engine.py)
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    last = json.loads((tmp_path / "s.json").read_text())["metrics"]["mIoU"]
    assert [e["step"] for e in evals] == [20, 40]
    assert 0.0 <= last <= 1.0
    for name in ("curves.png", "predictions.png", "checkpoints/last.pth"):
        assert (out / name).is_file(), name
    checkpoint = str(out / "checkpoints" / "last.pth")
    capsys.readouterr()
    assert main(["segment", "eval", "--checkpoint", checkpoint, "--scales", "1.0", "--json",
                 str(tmp_path / "m.json")]) == 0
    # the run evaluated under bf16 autocast, `segment eval` in fp32
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(last, abs=1e-3)
    image = next((scenes / "val" / "images").glob("*.png"))
    assert main(["segment", "predict", "--checkpoint", checkpoint, str(image), "--out-dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / f"{image.stem}_segmentation.png").is_file()
