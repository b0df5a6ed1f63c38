"""Building blocks that know nothing about whole networks."""

from .dropblock import DropBlock2D, set_drop_block_prob
from .norm import NORM_LAYERS, get_norm_layer, group_norm, needs_two_samples, pooled_norm_layer, uses_batch_statistics
from .split_attention import RadixSoftmax, SplitAttention, attention_channels
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "NORM_LAYERS",
    "DropBlock2D",
    "RadixSoftmax",
    "SplitAttention",
    "attention_channels",
    "get_norm_layer",
    "group_norm",
    "needs_two_samples",
    "pooled_norm_layer",
    "set_drop_block_prob",
    "uses_batch_statistics",
]
