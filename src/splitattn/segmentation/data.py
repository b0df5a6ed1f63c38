"""Datasets for a segmentation run from its ``data`` config section (ADE20K, VOC or the scenes)."""

from __future__ import annotations

from ..data import segmentation as seg

# (builder, default training split, default validation split)
DATASETS = {
    "ade20k": (seg.ade20k, "training", "validation"),
    "voc": (seg.voc, "train", "val"),
    "scenes": (seg.scenes, "train", "val"),
}


def build_segmentation_data(data, train: bool = True):
    """(training set with the random scale / crop / flip transform or None, validation set at full resolution).

    The validation set keeps its labels at the original resolution: predictions are resized to them.
    """
    builder, train_split, val_split = DATASETS[data.dataset]
    train_set = None
    if train:
        transform = seg.SegmentationTrainTransform(data.base_size, data.crop_size, tuple(data.scale_range),
                                                   data.flip_prob)
        train_set = builder(data.root, data.train_split or train_split, transform=transform)
    val_set = builder(data.root, data.val_split or val_split, transform=seg.SegmentationEvalTransform())
    if train_set is not None and val_set.num_classes != train_set.num_classes:
        raise ValueError(f"{data.root}: training and validation splits disagree on the number of classes")
    return train_set, val_set
