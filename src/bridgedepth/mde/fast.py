"""Inference-only speed-ups for CPU (and GPU) prediction; the weights and the maths are unchanged.

:func:`optimize_for_inference` returns a copy of a ``DepthAnythingForDepthEstimation`` with

- ``fuse_qkv``: each DINOv2 attention's three ``q/k/v`` projections concatenated into one linear layer
  (one GEMM of width 3C instead of three of width C) feeding PyTorch's fused
  ``scaled_dot_product_attention``;
- ``fold_layer_scale``: DINOv2's layer-scale vectors multiplied into the preceding output projections
  (``o_proj`` and the MLP's last linear layer), removing two element-wise passes per block;
- ``channels_last``: the DPT neck/head convolutions in NHWC memory layout (oneDNN's native layout on
  CPU, tensor cores' on GPU);
- ``inplace_relu``: the ReLUs whose input nothing else reads (the second one of each DPT residual
  unit, the head's two at full resolution) overwrite their input instead of allocating a fresh
  multi-megabyte output (the head's ReLU at 518x518x32 cost more than its bilinear upsample).

Measured effects are in docs/performance.md. Training uses only the NHWC layout
(``train.channels_last``, :func:`bridgedepth.mde.model.decoder_channels_last`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class FusedQKVAttention(nn.Module):
    """Drop-in for transformers' ``Dinov2Attention`` at inference (returns ``(output, None)``)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.num_heads = attn.num_attention_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
        self.qkv = nn.Linear(q.in_features, 3 * q.out_features, bias=q.bias is not None)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight], 0))
            if q.bias is not None:
                self.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias], 0))
        self.qkv.to(q.weight.device, q.weight.dtype)
        self.o_proj = attn.o_proj

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
        b, n, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attention_mask, scale=self.scaling)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.o_proj(out), None


def _fold_scale(linear: nn.Linear, scale: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.mul_(scale[:, None])
        if linear.bias is not None:
            linear.bias.mul_(scale)


def _inplace_relus(model) -> None:
    """Make the ReLUs whose input is read by nothing else in-place (inference only).

    In a DPT pre-activation residual unit ``conv2(relu(conv1(relu(x)))) + x`` the first ReLU's input is
    the residual, so only the second one may overwrite its input; the head's ReLUs follow a
    convolution whose output nothing else uses."""
    neck = getattr(model, "neck", None)
    if neck is not None:
        for mod in neck.modules():
            act = getattr(mod, "activation2", None)
            if isinstance(act, nn.ReLU) and hasattr(mod, "convolution1") and hasattr(mod, "convolution2"):
                act.inplace = True
    head = getattr(model, "head", None)
    for act_name in ("activation1", "activation2"):
        act = getattr(head, act_name, None)
        if isinstance(act, nn.ReLU):
            act.inplace = True


def optimize_for_inference(
    model, *, fuse_qkv: bool = True, fold_layer_scale: bool = True, channels_last: bool = True,
    inplace_relu: bool = True, inplace: bool = False,
):
    """An eval-mode copy of ``model`` (or ``model`` itself with ``inplace``) with the chosen speed-ups.

    The result is for inference only: the fused projection no longer shares parameters with ``q/k/v``.
    """
    m = (model if inplace else copy.deepcopy(model)).eval()
    for layer in m.backbone.encoder.layer:
        if fold_layer_scale:
            _fold_scale(layer.attention.o_proj, layer.layer_scale1.lambda1)
            mlp = layer.mlp
            _fold_scale(mlp.down_proj if hasattr(mlp, "down_proj") else mlp.fc2, layer.layer_scale2.lambda1)
            layer.layer_scale1 = nn.Identity()
            layer.layer_scale2 = nn.Identity()
        if fuse_qkv:
            layer.attention = FusedQKVAttention(layer.attention)
    if inplace_relu:
        _inplace_relus(m)
    if channels_last:
        from .model import decoder_channels_last

        decoder_channels_last(m)
    for p in m.parameters():
        p.requires_grad_(False)
    m.bridge_arch = getattr(model, "bridge_arch", None)
    m.bridge_meta = getattr(model, "bridge_meta", {})
    return m
