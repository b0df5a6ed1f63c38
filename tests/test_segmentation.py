"""Semantic segmentation: the dilated backbone equals the official dilated mode, DeepLabV3 / FCN heads,
a short training on real-object scenes, the CLI, and bad input."""

from __future__ import annotations

import json

import pytest
import resnest.torch as official
import torch

from splitattn.cli import main
from splitattn.config import ConfigError
from splitattn.data.scenes import make_scenes
from splitattn.segmentation import create_segmenter
from splitattn.segmentation.config import load_segment_config
from splitattn.segmentation.train import poly_learning_rate
from tests.conftest import max_rel_diff, randomize_


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


def test_class_prior_init_starts_at_the_label_frequencies(scenes):
    from splitattn.data import segmentation as seg
    from splitattn.segmentation.train import class_frequencies

    dataset = seg.scenes(scenes, "train")
    counts = torch.ones(11, dtype=torch.float64)
    for index in range(len(dataset)):
        counts += torch.bincount(dataset[index][1].reshape(-1), minlength=11).double()
    frequencies = class_frequencies(dataset)
    torch.testing.assert_close(frequencies, (counts / counts.sum()).float())
    assert frequencies[0] > 0.6  # background dominates the scenes
    model = create_segmenter("deeplabv3", "resnest14", num_classes=11, output_stride=16, base_planes=16,
                             head_channels=32).eval()
    model.init_class_prior(frequencies)
    with torch.no_grad():
        probabilities = model(dataset[0][0][None])["out"].softmax(1).mean((0, 2, 3))
    torch.testing.assert_close(probabilities, frequencies, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="11 positive class frequencies"):
        model.init_class_prior(torch.zeros(11))


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride"):
        create_segmenter("deeplabv3", "resnest14", output_stride=32)
    with pytest.raises(ValueError, match="deeplabv3plus"):
        create_segmenter("pspnet")
    with pytest.raises(ValueError, match="head_channels"):
        create_segmenter("deeplabv3", "resnest14", head_channels=0)
    with pytest.raises(ValueError, match="atrous_rates"):
        create_segmenter("deeplabv3", "resnest14", atrous_rates=(0, 6, 12))
    with pytest.raises(ConfigError, match="atrous_rates"):
        load_segment_config("configs/segmentation/scenes_deeplabv3_cpu.yaml", ["model.atrous_rates=[2,4]"])
    with pytest.raises(ValueError, match="resnest50"):
        create_segmenter("deeplabv3", "resnest5O")


def test_poly_schedule():
    assert poly_learning_rate(0, 0.01, 100, 0.9) == pytest.approx(0.01)
    assert poly_learning_rate(50, 0.01, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_learning_rate(0, 0.01, 100, 0.9, warmup_iters=10) == pytest.approx(0.001)


def test_overfitting_four_scenes_raises_miou(scenes):
    """The training path learns: 60 SGD steps on four real-object scenes lift mIoU far above the start."""
    from splitattn.data import segmentation as seg
    from splitattn.segmentation import ConfusionMatrix, segmentation_loss

    torch.manual_seed(0)
    dataset = seg.scenes(scenes, "train", transform=seg.SegmentationEvalTransform())
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
    args = ["segment", "train", "--config", "configs/segmentation/scenes_deeplabv3_cpu.yaml", f"data.root={scenes}",
            "data.base_size=64", "data.crop_size=64", "model.pretrained_backbone=false", "optim.batch_size=8",
            "optim.max_iters=40", "engine.eval_every_iters=20", "eval.final_scales=false", "data.workers=0",
            "engine.progress=false", "engine.log_every_iters=5", f"engine.out_dir={out}", "engine.compile=true",
            "--summary-json", str(tmp_path / "s.json")]
    assert main(args) == 0
    # The engine end to end, compiled as the preset (learning itself: test_overfitting_four_scenes_raises_miou).
    evals = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    last = json.loads((tmp_path / "s.json").read_text())["metrics"]["mIoU"]
    assert [e["step"] for e in evals] == [20, 40]
    assert 0.0 <= last <= 1.0
    for name in ("curves.png", "predictions.png", "checkpoints/last.pth"):
        assert (out / name).is_file(), name
    checkpoint = str(out / "checkpoints" / "last.pth")
    capsys.readouterr()
    assert main(["segment", "eval", "--checkpoint", checkpoint, "--scales", "1.0", "--refine-steps", "0", "--json",
                 str(tmp_path / "m.json")]) == 0
    # the run evaluated under bf16 autocast (the preset), `segment eval` in fp32
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(last, abs=1e-3)
    image = next((scenes / "val" / "images").glob("*.png"))
    assert main(["segment", "predict", "--checkpoint", checkpoint, str(image), "--out-dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / f"{image.stem}_segmentation.png").is_file()
    # the preset refines its final prediction (eval.refine_steps 32); the same pass reports the plain figure
    assert main(["segment", "eval", "--checkpoint", checkpoint, "--scales", "1.0", "--json",
                 str(tmp_path / "r.json")]) == 0
    refined = json.loads((tmp_path / "r.json").read_text())
    assert refined["refine"]["steps"] == 32 and 0.0 <= refined["mIoU"] <= 1.0
    assert refined["mIoU_unrefined"] == pytest.approx(last, abs=1e-3)
    with pytest.raises(SystemExit, match="odd"):
        main(["segment", "eval", "--checkpoint", checkpoint, "--refine-window", "4"])


def test_time_budget_fits_the_iterations_and_resume_keeps_them(scenes, tmp_path):
    from splitattn.models.weights import read_checkpoint_file
    from splitattn.segmentation.train import train_segmenter

    out, budget_s = tmp_path / "budget", 30.0
    overrides = [f"data.root={scenes}", "data.base_size=64", "data.crop_size=64", "model.pretrained_backbone=false",
                 "optim.batch_size=4", "optim.max_iters=1000000", f"optim.time_budget_min={budget_s / 60}",
                 "eval.final_scales=false", "data.workers=0", "engine.progress=false", "engine.compile=false",
                 "engine.log_every_iters=1", f"engine.out_dir={out}"]
    cfg = load_segment_config("configs/segmentation/scenes_deeplabv3_cpu.yaml", overrides)
    summary = train_segmenter(cfg)
    print(f"budget {budget_s} s: {summary.iterations} iterations in {summary.train_s:.1f} s")
    assert 60 <= summary.iterations < 1000000 and summary.train_s < 1.5 * budget_s
    ckpt = read_checkpoint_file(out / "checkpoints" / "last.pth")
    assert ckpt["fitted_max_iters"] == ckpt["config"]["optim"]["max_iters"] == summary.iterations
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps[-1]["step"] == summary.iterations and steps[-1]["lr"] < 0.05 * cfg.optim.lr  # poly to the new end
    # resuming the finished run keeps the fitted end instead of training on towards 1,000,000
    resumed = train_segmenter(load_segment_config("configs/segmentation/scenes_deeplabv3_cpu.yaml",
                                                  [*overrides, "engine.resume=auto"]))
    assert resumed.iterations == summary.iterations
    with pytest.raises(ConfigError, match="time_budget_min"):
        load_segment_config("configs/segmentation/scenes_deeplabv3_cpu.yaml", ["optim.time_budget_min=-1"])
