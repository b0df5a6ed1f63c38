"""ResNeSt network: deep stem, avg-down shortcuts, avd, dilation and a feature-pyramid mode.

One class covers every released variant (paper §3-4, official ``resnest/torch/resnet.py``) and the
ResNet-D / ResNeXt-D baselines (``radix=0``). Module names reproduce the official state-dict keys
(``conv1.0``, ``bn1``, ``layerL.B.conv2.{conv,bn0,fc1,bn1,fc2}``, ``downsample.1/2``, ``fc``, and
``conv2``/``bn2`` for radix 0), so every public checkpoint loads with ``strict=True``.

Behaviour that differs from the official torch code, on purpose:

* ``zero_init_last`` really zeroes each block's last BN γ (official ``last_gamma`` is undone by the
  generic BN init that runs after it; the Gluon recipe that made the weights had it working);
* DropBlock exists (official torch raises ``NotImplementedError``) at the three Gluon sites;
* inputs are validated with messages that name the fix (in a function ``torch.fx`` keeps as one call, so
  every model traces with ``torch.fx`` / torchvision's ``create_feature_extractor`` and still checks).

The timm model interface is there too (``timm/models/resnet.py`` is the model it follows):
``feature_info`` (a :class:`FeatureInfo`), ``forward_intermediates``, ``prune_intermediate_layers``,
``forward_head(pre_logits=)``, ``num_features`` / ``head_hidden_size``, ``get_classifier``,
``reset_classifier(num_classes, global_pool)``, ``group_matcher`` and ``set_grad_checkpointing``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from ..layers import (
    DeformConv2d,
    DeformSplitAttention,
    DropBlock2D,
    GlobalPool,
    SplitAttention,
    SyncBatchNorm,
    checkpoint_blocks,
    get_norm_layer,
    needs_two_samples,
    offset_conv,
    pooled_norm_layer,
)
from ..layers.norm import NormLayer
from .feature_info import FeatureInfo, take_indices

EXPANSION = 4
STAGES = ("layer1", "layer2", "layer3", "layer4")


def stage_layout(output_stride: int) -> list[tuple[int, int, int]]:
    """(stride, dilation, first-block dilation) of layer1..layer4, with the official dilation rule.

    Official ``dilated=True``/``dilation=4`` (OS 8): layer3 stride 1 with dilation 2 (first block 1),
    layer4 stride 1 with dilation 4 (first block 2). ``dilation=2`` (OS 16): layer4 stride 1 with
    dilation 2 (first block 1).
    """
    layouts = {
        32: [(1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1)],
        16: [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 2, 1)],
        8: [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 4, 2)],
    }
    if output_stride not in layouts:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    return layouts[output_stride]


def _drop_block_or_identity(enabled: bool, drop_prob: float) -> nn.Module:
    return DropBlock2D(drop_prob, block_size=3) if enabled else nn.Identity()


class Bottleneck(nn.Module):
    """ResNeSt bottleneck: 1×1 → split-attention k×k (or plain grouped conv for radix 0) → 1×1, ×4 expansion.

    ``avd`` moves the stride out of the 3×3 conv into a 3×3 average pool, placed after it
    (ResNeSt) or before it (``avd_first``, the "fast" models). DropBlock sites are the Gluon ones:
    after bn1, after the split-attention output (after bn2 for radix 0), after bn3.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        avd: bool = False,
        avd_first: bool = False,
        dilation: int = 1,
        is_first: bool = False,
        avd_dilated: bool = True,
        deform_groups: int = 0,
        deform_modulated: bool = True,
        drop_block: bool = False,
        drop_block_prob: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        attn_norm_layer: NormLayer | None = None,
        memory_efficient: bool = False,
    ):
        super().__init__()
        group_width = int(planes * (bottleneck_width / 64.0)) * cardinality
        # the official rule: also a stride-1 blur in the first block of a dilated stage (mmseg/mmdet omit it)
        use_avd = avd and (stride > 1 or (is_first and avd_dilated))
        conv2_stride = 1 if use_avd else stride
        avd_pool = nn.AvgPool2d(3, stride, padding=1) if use_avd else nn.Identity()

        self.conv1 = nn.Conv2d(inplanes, group_width, kernel_size=1, bias=False)
        self.bn1 = norm_layer(group_width)
        self.drop_block1 = _drop_block_or_identity(drop_block, drop_block_prob)
        self.act1 = act_layer(inplace=True)
        self.avd_pre = avd_pool if use_avd and avd_first else nn.Identity()
        # DCN (the official detectron2 plug-in's DeformBottleneckBlock): offsets predicted from the 3×3's input
        self.conv2_offset = (offset_conv(group_width, 3, conv2_stride, dilation, deform_groups, deform_modulated)
                             if deform_groups else None)
        deform = dict(deform_groups=deform_groups, deform_modulated=deform_modulated) if deform_groups else {}
        if radix >= 1:
            self.conv2 = (DeformSplitAttention if deform_groups else SplitAttention)(
                group_width, group_width, 3, conv2_stride, dilation, dilation, cardinality=cardinality, radix=radix,
                norm_layer=norm_layer, act_layer=act_layer, attn_norm_layer=attn_norm_layer,
                memory_efficient=memory_efficient, **deform)
            self.bn2 = nn.Identity()
            self.act2 = nn.Identity()
        else:
            self.conv2 = (DeformConv2d(group_width, group_width, 3, conv2_stride, dilation, dilation, cardinality,
                                       deform_groups, deform_modulated) if deform_groups else
                          nn.Conv2d(group_width, group_width, 3, conv2_stride, dilation, dilation,
                                    groups=cardinality, bias=False))
            self.bn2 = norm_layer(group_width)
            self.act2 = act_layer(inplace=True)
        self.drop_block2 = _drop_block_or_identity(drop_block, drop_block_prob)
        self.avd_post = avd_pool if use_avd and not avd_first else nn.Identity()
        self.conv3 = nn.Conv2d(group_width, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = norm_layer(planes * EXPANSION)
        self.drop_block3 = _drop_block_or_identity(drop_block, drop_block_prob)
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.act3 = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        out = self.act1(self.drop_block1(self.bn1(self.conv1(x))))
        out = self.avd_pre(out)
        if self.conv2_offset is None:
            out = self.conv2(out)
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = self.act2(self.drop_block2(self.bn2(out)))
        out = self.avd_post(out)
        out = self.drop_block3(self.bn3(self.conv3(out)))
        return self.act3(out + shortcut)


def avg_down_shortcut(inplanes: int, outplanes: int, stride: int, norm_layer: NormLayer) -> nn.Sequential:
    """ResNet-D shortcut: average pool (identity at stride 1) → 1×1 conv → norm; keys ``downsample.1/2``."""
    pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1 else nn.Identity())
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), norm_layer(outplanes))


class ResNeSt(nn.Module):
    """ResNeSt / ResNet-D classifier (deep stem, avg-down shortcuts).

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNeSt-50.
        radix: R splits per cardinal group; 0 gives the plain ResNet-D bottleneck.
        cardinality: K cardinal groups.
        bottleneck_width: width per group at stage 1 (64 = ResNet width).
        stem_width: deep-stem width (32 for ResNeSt-50 and the fast models, 64 for 101/200/269).
        avd: average-pool downsampling in the first block of stages 2-4.
        avd_first: pool before (fast models) instead of after the 3×3 split-attention conv.
        avd_dilated: keep the official stride-1 average pool in the first block of a dilated stage
            (``output_stride`` 8/16). False gives OpenMMLab's ResNeSt (``mmseg/models/backbones/resnest.py``:
            ``avg_down_stride and conv2_stride > 1``), which its segmentation checkpoints were trained with.
        output_stride: 32, 16 or 8, with the official dilation semantics (see :func:`stage_layout`);
            the stride of the deepest map for the standard stem (``stem_stride=4``).
        deform_stages: stages (1..4 = layer1..layer4) whose 3×3 convs are deformable, as the official
            detectron2 plug-in's ``DEFORM_ON_PER_STAGE`` (the paper's DCN rows: ``(2, 3, 4)`` = res3–res5).
            Each block gains a zero-initialised ``conv2_offset``; the 3×3 weights keep their keys.
        deform_groups: deformable groups (``DEFORM_NUM_GROUPS``; 2 in the paper's DCN configs).
        deform_modulated: DCNv2 (offsets and a sigmoid mask, ``DEFORM_MODULATED``) or DCNv1 (offsets only).
        base_planes: bottleneck planes of layer1 (64 in every released model); stages double it and
            the stage outputs are 4× planes. Smaller values make compact models for small images.
        stem_stride: 4 = the official stem (stride-2 conv and a max-pool); 2 drops the max-pool and
            1 also the stride, for small images such as 28-32 px (state-dict keys are unchanged).
        num_classes: classifier outputs; 0 removes the head (``forward`` returns pooled features).
        global_pool: 'avg' (the official mean), 'max', 'avgmax' or '' (no pooling; needs ``num_classes=0``).
        in_chans: input channels.
        drop_rate: dropout before ``fc`` (0.2 for ResNeSt-200/269 in the recipe).
        drop_block_rate: initial DropBlock probability at the three sites in layers 3-4; change it
            during training with :func:`splitattn.layers.set_drop_block_prob`.
        zero_init_last: zero each block's last norm γ after init (the recipe's ``--last-gamma``).
        norm_layer: ``'bn' | 'syncbn' | 'frozenbn' | 'gn'`` or a callable taking the channel count.
        memory_efficient: split attention keeps one map instead of two for backward in training
            (BatchNorm with local batch statistics; other norms use the plain path). Same gradients.
    """

    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg"]  # TorchScript compiles properties otherwise

    def __init__(
        self,
        layers: Sequence[int],
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        stem_width: int = 32,
        avd: bool = True,
        avd_first: bool = False,
        avd_dilated: bool = True,
        output_stride: int = 32,
        deform_stages: Sequence[int] = (),
        deform_groups: int = 1,
        deform_modulated: bool = True,
        base_planes: int = 64,
        stem_stride: int = 4,
        num_classes: int = 1000,
        global_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_block_rate: float = 0.0,
        zero_init_last: bool = True,
        norm_layer: str | NormLayer = "bn",
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        memory_efficient: bool = False,
    ):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {tuple(layers)}")
        if radix < 0 or cardinality < 1:
            raise ValueError(f"radix must be >= 0 and cardinality >= 1, got {radix}, {cardinality}")
        if stem_stride not in (1, 2, 4) or base_planes < 1:
            raise ValueError(f"stem_stride must be 1, 2 or 4 and base_planes >= 1, got {stem_stride}, {base_planes}")
        deform_stages = (deform_stages,) if isinstance(deform_stages, int) else tuple(deform_stages)
        if any(stage not in (1, 2, 3, 4) for stage in deform_stages) or deform_groups < 1:
            raise ValueError(f"deform_stages must list stages 1..4 (the paper's DCN: [2, 3, 4]) and deform_groups "
                             f"must be >= 1, got {deform_stages}, {deform_groups}")
        for stage in deform_stages:  # the offset conv is grouped by deformable group over the 3×3's input
            width = int(base_planes * 2 ** (stage - 1) * bottleneck_width / 64) * cardinality
            if width % deform_groups:
                raise ValueError(f"deform_groups={deform_groups} does not divide the {width} channels of stage "
                                 f"{stage}'s 3×3 conv: choose a divisor (the paper's DCN uses 2)")
        if in_chans < 1 or num_classes < 0:
            raise ValueError(f"in_chans must be >= 1 and num_classes >= 0, got {in_chans}, {num_classes}")
        norm = get_norm_layer(norm_layer)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.reduction = output_stride * stem_stride // 4  # stride of the deepest map
        stage_planes = [base_planes * 2**i for i in range(4)]
        self.num_features = self.head_hidden_size = stage_planes[-1] * EXPANSION
        self.grad_checkpointing: tuple[str, ...] = ()  # the stages whose blocks recompute in backward

        # Deep stem (ResNet-C/D): three 3×3 convs; Sequential indices 0/1/3/4/6 are the official keys.
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, min(stem_stride, 2), 1, bias=False), norm(stem_width),
            act_layer(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False), norm(stem_width), act_layer(inplace=True),
            nn.Conv2d(stem_width, stem_width * 2, 3, 1, 1, bias=False),
        )
        self.bn1 = norm(stem_width * 2)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_stride == 4 else nn.Identity()

        inplanes = stem_width * 2
        reduction = stem_stride
        info = [dict(num_chs=inplanes, reduction=min(stem_stride, 2), module="act1")]
        block_args = dict(radix=radix, cardinality=cardinality, bottleneck_width=bottleneck_width,
                          avd=avd, avd_first=avd_first, avd_dilated=avd_dilated, norm_layer=norm, act_layer=act_layer,
                          attn_norm_layer=pooled_norm_layer(norm_layer), memory_efficient=memory_efficient)
        for index, (planes, blocks, (stride, dilation, first_dilation)) in enumerate(
            zip(stage_planes, layers, stage_layout(output_stride)), start=1
        ):
            drop_block = index >= 3  # DropBlock lives in the last two stages only (paper §4, Gluon defs)
            outplanes = planes * EXPANSION
            deform = dict(deform_groups=deform_groups if index in deform_stages else 0,
                          deform_modulated=deform_modulated)
            stage = [Bottleneck(inplanes, planes, stride,
                                downsample=avg_down_shortcut(inplanes, outplanes, stride, norm),
                                dilation=first_dilation, is_first=index > 1,
                                drop_block=drop_block, drop_block_prob=drop_block_rate, **deform, **block_args)]
            stage += [Bottleneck(outplanes, planes, dilation=dilation, drop_block=drop_block,
                                 drop_block_prob=drop_block_rate, **deform, **block_args) for _ in range(1, blocks)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            inplanes = outplanes
            reduction *= stride
            info.append(dict(num_chs=outplanes, reduction=reduction, module=f"layer{index}"))
        self.feature_info = FeatureInfo(info)

        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self._set_head(num_classes, global_pool)
        self._init_weights(zero_init_last)

    # ----------------------------------------------------------------- init
    def _init_weights(self, zero_init_last: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He normal, fan-out: std = sqrt(2 / (k·k·out_channels)) as the official code
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, Bottleneck) and module.conv2_offset is not None:
                # DCN as the plug-in: zero offsets (the plain conv at first); a radix-0 deformable 3×3 gets the
                # fan-out He init of the other convs, split attention's keeps detectron2's kaiming-uniform
                nn.init.zeros_(module.conv2_offset.weight)
                nn.init.zeros_(module.conv2_offset.bias)
                if isinstance(module.conv2, DeformConv2d):
                    module.conv2.reset_parameters_fan_out()
        if zero_init_last:
            # After the generic init, unlike the official torch code where this ordering made it a no-op.
            # Only trainable γ: zeroing a frozen BN's buffer would switch the branch off for good.
            for module in self.modules():
                if isinstance(module, Bottleneck) and isinstance(getattr(module.bn3, "weight", None), nn.Parameter):
                    nn.init.zeros_(module.bn3.weight)

    # ----------------------------------------------------------------- head
    def _set_head(self, num_classes: int, global_pool: str) -> None:
        if global_pool == "" and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0: a linear classifier needs pooled "
                             "features")
        self.num_classes = num_classes
        self.global_pool = GlobalPool(global_pool)
        like = self.conv1[0].weight  # a new head joins the model where it is: device and dtype
        self.fc = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                   if num_classes > 0 else nn.Identity())

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``num_classes``-way linear head (0 removes it); ``global_pool`` changes the pooling too."""
        self._set_head(num_classes, self.global_pool.pool_type if global_pool is None else global_pool)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups for layer-wise lr decay and freezing (timm's ``group_matcher`` rule for ResNets)."""
        return dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def set_grad_checkpointing(self, enable: bool | Sequence[int] = True) -> None:
        """Recompute the blocks of every stage (True), of stages ``enable`` (1..4 = layer1..layer4) or of none
        (False) in backward: less memory, one more forward pass. Gradients and BatchNorm statistics are unchanged
        (:mod:`splitattn.layers.checkpointing`)."""
        if isinstance(enable, bool):
            stages = (1, 2, 3, 4) if enable else ()
        else:
            stages = (enable,) if isinstance(enable, int) else tuple(enable)
        if any(stage not in (1, 2, 3, 4) for stage in stages):
            raise ValueError(f"grad checkpointing takes True, False or stages 1..4 (layer1..layer4), got {enable!r}")
        self.grad_checkpointing = tuple(STAGES[stage - 1] for stage in sorted(set(stages)))

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's pretrained config of this model (its zoo entry's weights and evaluation preprocessing)."""
        from .pretrained_cfg import pretrained_cfg

        return pretrained_cfg(getattr(self, "zoo_entry", None), self)

    default_cfg = pretrained_cfg

    # ----------------------------------------------------------------- checks
    @torch.jit.unused
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that names the fix for inputs the network cannot use."""
        _check_input(x, self.in_chans, self.reduction)
        if self.training and x.shape[0] == 1 and needs_two_samples(self):
            raise ValueError(_batch_of_one(any(isinstance(m, SyncBatchNorm) for m in self.modules())))

    @torch.jit.unused
    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        """``x``, after :meth:`check_input`; not under ``torch.jit.trace``, and under ``torch.fx`` the shape checks
        are one opaque call that stays in the traced graph (its result is used)."""
        if torch.jit.is_tracing():
            return x
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing: the train/eval decision is the traced mode's
            return _checked_input(x, self.in_chans, self.reduction, self.training and needs_two_samples(self))
        self.check_input(x)
        return x

    # ----------------------------------------------------------------- forward
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def run_stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """One stage, its blocks recomputed in backward when gradient checkpointing covers it."""
        stage = getattr(self, name)
        if (name in self.grad_checkpointing and isinstance(stage, nn.Sequential) and self.training
                and torch.is_grad_enabled()
                and not torch.jit.is_scripting() and not isinstance(x, torch.fx.Proxy)):
            return checkpoint_blocks(stage, x)
        return stage(x)

    @torch.jit.unused
    def _run_stages(self, x: torch.Tensor) -> torch.Tensor:
        for name in STAGES:
            x = self.run_stage(name, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: the C5 map, at stride ``self.reduction``."""
        if not torch.jit.is_scripting():
            x = self._checked(x)
        x = self.maxpool(self.forward_stem(x))
        if not torch.jit.is_scripting():  # noqa: SIM102  (TorchScript prunes only a bare is_scripting() test)
            if len(self.grad_checkpointing) > 0:
                return self._run_stages(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the maps of levels ``indices`` (0 = stem, 1..4 = layer1..layer4; None = all,
        an int n = the last n), and the final map unless ``intermediates_only``. ``norm`` is accepted for timm's
        signature (a ResNet has no final norm); ``stop_early`` skips the stages past the deepest level asked."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: ResNeSt gives NCHW maps only")
        take, deepest = take_indices(5, indices)
        x, maps = self._intermediates(self._checked(x), take, deepest if stop_early else 4)
        return maps if intermediates_only else (x, maps)

    def _intermediates(self, x: torch.Tensor, take: Sequence[int], deepest: int) -> tuple[torch.Tensor,
                                                                                          list[torch.Tensor]]:
        x = self.forward_stem(x)
        maps = [x] if 0 in take else []
        x = self.maxpool(x)
        for level, name in enumerate(STAGES[:deepest], start=1):
            x = self.run_stage(name, x)
            if level in take:
                maps.append(x)
        return x, maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages past the deepest of ``indices`` (they become Identity) and, with ``prune_head``, the
        classifier; returns the kept levels (timm's API)."""
        take, deepest = take_indices(5, indices)
        for name in STAGES[deepest:]:
            setattr(self, name, nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return take


def set_grad_checkpointing(model: nn.Module, enable: bool | Sequence[int] = True) -> int:
    """Gradient checkpointing of every ResNeSt inside ``model`` (a classifier, or a detector's / segmenter's
    backbone): see :meth:`ResNeSt.set_grad_checkpointing`. Returns how many networks it set."""
    networks = [m for m in model.modules() if isinstance(m, ResNeSt)]
    if enable and not networks:
        raise ValueError(f"{type(model).__name__} holds no ResNeSt to checkpoint")
    for network in networks:
        network.set_grad_checkpointing(enable)
    return len(networks)


@torch.fx.wrap
def _checked_input(x: torch.Tensor, in_chans: int, reduction: int, needs_two: bool) -> torch.Tensor:
    """The input checks, as one leaf call of a ``torch.fx`` graph."""
    _check_input(x, in_chans, reduction)
    if needs_two and x.shape[0] == 1:
        raise ValueError(_batch_of_one(False))
    return x


def _batch_of_one(synced: bool) -> str:
    return ("batch size 1 in training mode: the BatchNorm inside split attention normalises a globally "
            "pooled 1×1 map, so it sees one value per channel and cannot compute batch statistics. "
            "Train with batches of 2 or more (16+ per device is advised), call model.eval() for inference, "
            + ("or train under torchrun with several processes (SyncBatchNorm synchronises only then)"
               if synced else "or use a norm without batch statistics: norm_layer='frozenbn' or 'gn' "
               "(create_model), norm='frozenbn' or 'gn' (create_detector, create_segmenter)"))


def _check_input(x: torch.Tensor, in_chans: int, reduction: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}; "
                         "add a batch dimension with x.unsqueeze(0)")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"input has {x.shape[1]} channels but the model expects {in_chans}: convert the image "
            f"(e.g. grayscale -> RGB) or build the model with in_chans={x.shape[1]}")
    height, width = x.shape[2], x.shape[3]
    if height < reduction or width < reduction:
        raise ValueError(
            f"input {height}×{width} is smaller than the output stride {reduction}: the last "
            f"feature map would be computed from padding alone. Resize to at least "
            f"{reduction}×{reduction} (the official eval crops are 224-416)")


class ResNeStFeatures(ResNeSt):
    """Backbone returning the maps at ``out_indices`` (0 = stem/2, 1..4 = C2..C5) for FPN or segmentation.

    ``feature_info`` gives each returned map's channels (``num_chs``) and stride (``reduction``).
    The classifier is removed; stages past the deepest requested index are kept (so full
    checkpoints still load strictly) but never run.
    """

    def __init__(self, *args, out_indices: Sequence[int] = (1, 2, 3, 4), **kwargs):
        kwargs["num_classes"] = 0
        super().__init__(*args, **kwargs)
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(5) for i in out_indices) or len(set(out_indices)) != len(out_indices):
            raise ValueError(f"out_indices must be distinct values in 0..4 (0 = stem, 1..4 = C2..C5), "
                             f"got {out_indices}")
        self.out_indices = sorted(out_indices)
        self.feature_info = self.feature_info.from_other(self.out_indices)
        self.return_stem = 0 in out_indices
        self.last_index = max(out_indices)

    @torch.jit.unused
    def _forward_checkpointed(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._intermediates(x, self.out_indices, self.last_index)[1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        if not torch.jit.is_scripting():
            x = self._checked(x)
            if len(self.grad_checkpointing) > 0:
                return self._forward_checkpointed(x)
        # Unrolled: TorchScript cannot iterate over stages of different module types.
        features: list[torch.Tensor] = []
        x = self.forward_stem(x)
        if self.return_stem:
            features.append(x)
        x = self.layer1(self.maxpool(x))
        if 1 in self.out_indices:
            features.append(x)
        if self.last_index >= 2:
            x = self.layer2(x)
            if 2 in self.out_indices:
                features.append(x)
        if self.last_index >= 3:
            x = self.layer3(x)
            if 3 in self.out_indices:
                features.append(x)
        if self.last_index >= 4:
            x = self.layer4(x)
            features.append(x)
        return features
