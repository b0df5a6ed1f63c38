"""Networks, the zoo, weights and model statistics."""

from .factory import create_model
from .feature_info import FeatureInfo
from .info import Measured, count_params, measure, model_info
from .resnest import Bottleneck, ResNeSt, ResNeStFeatures, set_grad_checkpointing, stage_layout
from .weights import (
    CheckpointError,
    LoadReport,
    cache_dir,
    download_checkpoint,
    load_weights,
    read_state_dict,
)
from .zoo import Checkpoint, EvalConfig, HubFile, ModelEntry, Reference, get_entry, list_models, register_model

__all__ = [
    "Bottleneck", "Checkpoint", "CheckpointError", "EvalConfig", "FeatureInfo", "LoadReport", "Measured", "ModelEntry",
    "HubFile", "Reference", "ResNeSt", "ResNeStFeatures", "cache_dir", "count_params", "create_model",
    "download_checkpoint", "get_entry", "list_models", "load_weights", "measure", "model_info",
    "read_state_dict", "register_model", "set_grad_checkpointing", "stage_layout",
]
