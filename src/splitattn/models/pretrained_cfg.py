"""timm's ``pretrained_cfg`` of a zoo model, built from its entry (``timm/models/_pretrained.py`` ``PretrainedCfg``).

timm's data pipeline reads it (``timm.data.resolve_data_config``), so a timm user gets the official evaluation
preprocessing: ``test_input_size`` and ``crop_pct`` are the official eval crop and ``crop / (crop + 32)``
(``scripts/torch/verify.py`` of zhanghang1989/ResNeSt), with the entry's interpolation.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .zoo import ModelEntry

ORIGIN_URL = "https://github.com/zhanghang1989/ResNeSt"
PAPER_ID = "arXiv:2004.08955"
PAPER_NAME = "ResNeSt: Split-Attention Networks"


def pretrained_cfg(entry: ModelEntry | None, model: nn.Module | None = None) -> dict[str, Any]:
    """The config timm keeps beside a model's weights: its pretrained weights' (``num_classes`` is theirs), with
    ``model``'s input channels."""
    in_chans = getattr(model, "in_chans", 3)
    num_classes = getattr(model, "num_classes", 1000)
    if entry is None:  # a ResNeSt built directly: the ImageNet defaults
        return dict(architecture=None, input_size=(in_chans, 224, 224), crop_pct=0.875, crop_mode="center",
                    interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                    num_classes=num_classes, first_conv="conv1.0", classifier="fc")
    checkpoint = entry.checkpoint
    hub_files = getattr(checkpoint, "hub_files", ()) if checkpoint else ()
    crop = entry.eval.crop
    reduction = getattr(model, "reduction", 32)
    return dict(
        architecture=f"splitattn_{entry.name}",  # the timm name (splitattn.timm_bridge) that rebuilds it
        tag=None,
        url=checkpoint.urls[0] if checkpoint else "",
        hf_hub_id=hub_files[0].repo_id if hub_files else None,
        input_size=(in_chans, entry.train_crop, entry.train_crop),
        test_input_size=(in_chans, crop, crop),
        pool_size=(-(-crop // reduction),) * 2,
        crop_pct=entry.eval.crop_pct,
        test_crop_pct=entry.eval.crop_pct,
        crop_mode="center",
        interpolation=entry.eval.interpolation,
        mean=tuple(entry.eval.mean),
        std=tuple(entry.eval.std),
        num_classes=checkpoint.num_classes if checkpoint else num_classes,  # the weights' classes, as timm
        first_conv="conv1.0",
        classifier="fc",
        license="apache-2.0",
        origin_url=ORIGIN_URL,
        paper_ids=PAPER_ID,
        paper_name=PAPER_NAME,
        description=entry.description,
    )
