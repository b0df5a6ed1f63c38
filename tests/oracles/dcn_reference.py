"""DCNv2 written out from its equation, indexed as detectron2's CUDA kernel indexes (a test oracle).

Zhu et al., "Deformable ConvNets v2" (arXiv 1811.11168), eq. 3: ``y(p) = Σ_k w_k · x(p + p_k + Δp_k) · Δm_k``.
Indexing from facebookresearch/detectron2 ``detectron2/layers/csrc/deformable/deform_conv_cuda_kernel.cu``
(``modulated_deformable_im2col_gpu_kernel`` and ``dmcn_im2col_bilinear``): input channel ``c`` belongs to
deformable group ``g = c // (C / G)``; kernel point ``k = i·kw + j`` reads Δh at offset channel ``2·(g·K + k)``,
Δw at ``2·(g·K + k) + 1`` and the mask at ``g·K + k``; the sample at (h, w) is bilinear with each of the four
corners taken as 0 outside the map (and 0 altogether unless -1 < h < H and -1 < w < W, which the zero corners
already give). Plain autograd tensors, so gradients come from the same formula.
"""

from __future__ import annotations

import torch


def _sample(x: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) at real positions h, w (B, C, Ho, Wo), bilinear, zero outside."""
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)
    h_low, w_low = torch.floor(h), torch.floor(w)
    lh, lw = h - h_low, w - w_low
    out = torch.zeros_like(h)
    for dh, dw, weight in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw), (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
        ys, xs = (h_low + dh).long(), (w_low + dw).long()
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        index = (ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)).reshape(batch, channels, -1)
        value = torch.gather(flat, 2, index).reshape(h.shape)
        out = out + weight * value * inside
    return out


def deform_conv_reference(x, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                          deform_groups=1) -> torch.Tensor:
    """(B, Cout, Ho, Wo) of the (modulated, if ``mask`` is given) deformable conv, from the equation."""
    batch, channels, _, _ = x.shape
    out_channels, _, kh, kw = weight.shape
    points = kh * kw
    height_out, width_out = offset.shape[2], offset.shape[3]
    group_of_channel = torch.arange(channels) // (channels // deform_groups)
    base_h = (torch.arange(height_out, dtype=x.dtype) * stride - padding)[:, None]
    base_w = (torch.arange(width_out, dtype=x.dtype) * stride - padding)[None, :]
    columns = []
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            dh = offset[:, 2 * (group_of_channel * points + k)]  # (B, C, Ho, Wo): each channel its group's Δh
            dw = offset[:, 2 * (group_of_channel * points + k) + 1]
            value = _sample(x, base_h + i * dilation + dh, base_w + j * dilation + dw)
            if mask is not None:
                value = value * mask[:, group_of_channel * points + k]
            columns.append(value)
    cols = torch.stack(columns, 2)  # (B, C, K, Ho, Wo)
    per_group_in, per_group_out = channels // groups, out_channels // groups
    outs = []
    for g in range(groups):
        block = cols[:, g * per_group_in:(g + 1) * per_group_in].reshape(batch, per_group_in * points, -1)
        w = weight[g * per_group_out:(g + 1) * per_group_out].reshape(per_group_out, per_group_in * points)
        outs.append(torch.einsum("ok,bkn->bon", w, block))
    y = torch.cat(outs, 1).reshape(batch, out_channels, height_out, width_out)
    return y if bias is None else y + bias[None, :, None, None]


def detectron2_modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups,
                                     deformable_groups):
    """Stand-in with the signature of ``detectron2.layers.deform_conv.modulated_deform_conv`` (CUDA-only upstream)."""
    return deform_conv_reference(x, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups)
