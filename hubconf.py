"""torch.hub entry points: ``torch.hub.load("<this repository>", "resnest50", pretrained=True)``.

One entry per zoo model (``splitattn.list_models()``), per released detector (``splitattn list --task detect``)
and per released segmenter (``splitattn list --task segment``); ``torch.hub.list(...)`` shows them and
``torch.hub.help(..., name)`` their docstrings. ``pretrained=True`` downloads the official file (sha256-checked);
keyword arguments go to :func:`splitattn.create_model`, ``create_detector`` or ``create_segmenter``.
"""

import os
import sys

dependencies = ["torch", "torchvision", "numpy", "PIL", "yaml", "tqdm"]

# this repository's code, not another installed copy: torch.hub fetched this revision to run it
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(os.path.join(_SRC, "splitattn")) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from splitattn.detection.zoo import detector_kwargs, get_detection_entry, list_detectors  # noqa: E402
from splitattn.models import create_model, get_entry, list_models  # noqa: E402
from splitattn.segmentation.zoo import get_segmentation_entry, list_segmenters, segmenter_kwargs  # noqa: E402


def _classifier(name):
    def entry(pretrained=False, **kwargs):
        return create_model(name, pretrained=pretrained, **kwargs)

    entry.__doc__ = (f"{get_entry(name).description}.\n\npretrained: False, True (the released ImageNet weights) or "
                     "a path / URL; other keyword arguments as splitattn.create_model.")
    return entry


def _detector(name):
    def entry(pretrained=True, **kwargs):
        from splitattn.detection import create_detector

        if pretrained:
            return create_detector(pretrained=name, **kwargs)
        return create_detector(**{**detector_kwargs(get_detection_entry(name)), **kwargs})

    row = get_detection_entry(name)
    entry.__doc__ = (f"{row.kind} on {row.backbone} ({row.layout} layout), the released COCO checkpoint.\n\n"
                     "pretrained=False builds the same architecture with fresh weights.")
    return entry


def _segmenter(name):
    def entry(pretrained=True, **kwargs):
        from splitattn.segmentation import create_segmenter

        if pretrained:
            return create_segmenter(pretrained=name, **kwargs)
        return create_segmenter(**{**segmenter_kwargs(get_segmentation_entry(name)), **kwargs})

    row = get_segmentation_entry(name)
    entry.__doc__ = (f"{row.kind} on {row.backbone}, the released checkpoint ({name}).\n\n"
                     "pretrained=False builds the same architecture with fresh weights.")
    return entry


for _name in list_models():
    globals()[_name] = _classifier(_name)
for _name in list_detectors():
    globals()[_name] = _detector(_name)
for _name in list_segmenters():
    globals()[_name] = _segmenter(_name)
del _name
