"""Building blocks that know nothing about whole networks."""

from .checkpointing import checkpoint_blocks, frozen_running_stats
from .deform_conv import DeformConv2d, offset_conv
from .dropblock import DropBlock2D, set_drop_block_prob
from .norm import NORM_LAYERS, get_norm_layer, group_norm, needs_two_samples, pooled_norm_layer, uses_batch_statistics
from .pooling import POOL_TYPES, GlobalPool
from .split_attention import DeformSplitAttention, RadixSoftmax, SplitAttention, attention_channels
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "POOL_TYPES",
    "GlobalPool",
    "checkpoint_blocks",
    "frozen_running_stats",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "NORM_LAYERS",
    "DeformConv2d",
    "DeformSplitAttention",
    "DropBlock2D",
    "RadixSoftmax",
    "SplitAttention",
    "attention_channels",
    "get_norm_layer",
    "group_norm",
    "needs_two_samples",
    "offset_conv",
    "pooled_norm_layer",
    "set_drop_block_prob",
    "uses_batch_statistics",
]
