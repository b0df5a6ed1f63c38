"""splitattn: ResNeSt (Split-Attention Networks, Zhang et al. 2020) in PyTorch.

    >>> import splitattn
    >>> model = splitattn.create_model("resnest50", pretrained=True).eval()
    >>> transform = splitattn.create_transform("resnest50")
"""

from .data.transforms import create_transform
from .deploy import compile_for_inference, deploy, optimize
from .layers import DropBlock2D, SplitAttention, set_drop_block_prob
from .models import (
    CheckpointError,
    ResNeSt,
    ResNeStFeatures,
    create_model,
    get_entry,
    list_models,
    load_weights,
    measure,
    model_info,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DropBlock2D", "ResNeSt", "ResNeStFeatures", "SplitAttention", "compile_for_inference",
    "create_model", "create_transform", "deploy", "get_entry", "list_models", "load_weights", "measure",
    "model_info", "optimize", "register_model", "set_drop_block_prob",
]
