"""Datasets and batches: real Fashion-MNIST files, image folders with broken files, sharding, resume."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from splitattn.classification.config import load_classification_config as load_config
from splitattn.classification.data import balanced_subset, build_data, shard
from splitattn.classification.fashion_mnist import DEBIAN_DIR, load_fashion_mnist
from splitattn.classification.folder import DatasetError, ImageFolderDataset
from tests.conftest import foolbox_photos


def _require_fashion_mnist():
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise pytest.UsageError(f"Fashion-MNIST is not installed in {DEBIAN_DIR}: run `make test` as root "
                                "(it installs dataset-fashion-mnist) or `apt-get install dataset-fashion-mnist`")


def test_fashion_mnist_debian_files():
    _require_fashion_mnist()
    x, y = load_fashion_mnist(None, "train")
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [6000] * 10
    tx, ty = load_fashion_mnist(None, "test")
    assert tx.shape == (10000, 28, 28) and torch.bincount(ty).tolist() == [1000] * 10


def test_fashion_mnist_missing_and_truncated_files(tmp_path):
    _require_fashion_mnist()
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, "train")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DEBIAN_DIR / name, tmp_path / name)
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DatasetError, match="truncated"):
        load_fashion_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 64))
    with pytest.raises(DatasetError, match="bad magic number"):
        load_fashion_mnist(tmp_path, "test")


def make_folder(root: Path, per_class: int = 3, broken: int = 0) -> Path:
    """An ImageNet-style tree from the real foolbox photos: train/ and val/ with two classes."""
    photos = foolbox_photos()
    for split in ("train", "val"):
        for c, name in enumerate(("n01", "n02")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                shutil.copy(photos[(c * per_class + i) % len(photos)], folder / f"img{i}.jpg")
    for i in range(broken):
        (root / "train" / "n01" / f"broken{i}.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_image_folder_skips_and_names_unreadable_files(tmp_path):
    root = make_folder(tmp_path, per_class=3, broken=2)
    cfg = load_config(None, [f"data.root={root}", "optim.batch_size=2", "data.workers=0", "model.name=resnest14",
                             "data.train_crop=64", "data.eval_crop=64"])
    data = build_data(cfg, per_process_batch=2)
    assert data.classes == ["n01", "n02"] and len(data.train.dataset) == 8
    seen, skipped = 0, []
    for images, labels, bad in data.train.batches(0):
        seen += len(labels)
        skipped += bad
        assert images.shape[1:] == (3, 64, 64) or len(labels) == 0
    assert seen == 6 and sorted(Path(p).name for p in skipped) == ["broken0.jpg", "broken1.jpg"]
    cfg.data.strict = True
    strict = build_data(cfg, per_process_batch=2)
    with pytest.raises(DatasetError, match=r"broken.*not a readable image.*data.strict=false"):
        for _ in strict.train.batches(0):
            pass


def test_empty_or_missing_folders_fail_before_training(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    root = make_folder(tmp_path)
    (root / "train" / "n03").mkdir()
    with pytest.raises(DatasetError, match="class folder.* with no images .*n03"):
        ImageFolderDataset(root / "train")
    (root / "train" / "n03").rmdir()
    (root / "val" / "n02").rename(root / "val" / "n09")
    train = ImageFolderDataset(root / "train")
    with pytest.raises(DatasetError, match="different class folders"):
        ImageFolderDataset(root / "val", classes=train.classes)


def test_shards_cover_every_sample_once_padding_by_wrapping():
    parts = [shard(10, 3, r) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]
    assert sorted(torch.cat(parts).tolist()) == sorted(list(range(10)) + [0, 1])


def test_balanced_subset():
    labels = torch.arange(10).repeat_interleave(50)
    keep = balanced_subset(labels, 105, seed=0)
    assert len(keep) == 105 and len(set(keep.tolist())) == 105
    assert sorted(torch.bincount(labels[keep]).tolist()) == [10] * 5 + [11] * 5
    torch.testing.assert_close(keep, balanced_subset(labels, 105, seed=0))


def test_batches_resume_mid_epoch_exactly(tmp_path):
    _require_fashion_mnist()
    cfg = load_config("configs/fashion_mnist/resnest_cpu.yaml", ["data.train_subset=640", "optim.batch_size=64"])
    data = build_data(cfg, per_process_batch=64)
    full = list(data.train.batches(epoch=1))
    tail = list(data.train.batches(epoch=1, start_step=6))
    assert len(full) == 10 and len(tail) == 4
    for (a, la, _), (b, lb, _) in zip(full[6:], tail):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(full[0][0], list(data.train.batches(epoch=2))[0][0])

    root = make_folder(tmp_path, per_class=4)
    folder_cfg = load_config(None, [f"data.root={root}", "data.workers=0", "data.train_crop=32",
                                    "model.name=resnest14"])
    folder = build_data(folder_cfg, per_process_batch=2)
    whole = list(folder.train.batches(epoch=0))
    rest = list(folder.train.batches(epoch=0, start_step=2))
    for (a, la, _), (b, lb, _) in zip(whole[2:], rest):
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.parametrize("erasing", [0.0, 0.5])
def test_two_processes_see_the_single_process_batch(erasing):
    _require_fashion_mnist()
    cfg = load_config("configs/fashion_mnist/resnest_cpu.yaml", ["data.train_subset=512",
                                                                 f"data.random_erasing={erasing}"])
    single = next(build_data(cfg, 64, 0, 1).train.batches(0))
    ranks = [next(build_data(cfg, 32, r, 2).train.batches(0)) for r in range(2)]
    images = torch.stack([ranks[i % 2][0][i // 2] for i in range(64)])
    labels = torch.stack([ranks[i % 2][1][i // 2] for i in range(64)])
    assert torch.equal(images, single[0]) and torch.equal(labels, single[1])
    if erasing:  # torchvision's RandomErasing, one seed per sample: about half the images have a noise box
        plain = next(build_data(load_config("configs/fashion_mnist/resnest_cpu.yaml", ["data.train_subset=512"]),
                                64, 0, 1).train.batches(0))[0]
        changed = (single[0] != plain).flatten(1).any(1).float().mean().item()
        assert 0.3 < changed < 0.7, changed
