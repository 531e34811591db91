"""Conversion of original Depth-Anything-V2 checkpoints.

The reference below re-implements the ORIGINAL module structure (DINOv2 ``DinoVisionTransformer`` with a
fused qkv projection and layer scale, and the DPT head of Depth-Anything-V2 with its key names), so that a
random model in the original key layout can be saved, converted, loaded into transformers and compared.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bridgedepth.errors import InputError
from bridgedepth.mde.convert import convert_depth_anything_v2, convert_state_dict, read_state_dict
from bridgedepth.mde.model import load_model, read_metadata
from bridgedepth.mde.registry import ARCHS

# ---------------------------------------------------------------- original structure (reference)


class _Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // self.heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLUFused(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12, self.w3 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class _LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, dim, heads, swiglu):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attn(dim, heads)
        self.ls1, self.ls2 = _LayerScale(dim), _LayerScale(dim)
        self.mlp = (_SwiGLUFused if swiglu else _Mlp)(dim, 4 * dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 14, 14)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _DINOv2(nn.Module):
    def __init__(self, a):
        super().__init__()
        n = (a.image_size // 14) ** 2
        self.patch_embed = _PatchEmbed(a.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, a.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, a.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, a.hidden_size))
        self.blocks = nn.ModuleList(_Block(a.hidden_size, a.num_heads, a.swiglu) for _ in range(a.num_layers))
        self.norm = nn.LayerNorm(a.hidden_size, eps=1e-6)

    def interpolate_pos_encoding(self, x, h, w):  # DINOv2's: scale_factor with the 0.1 offset
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and h == w:
            return self.pos_embed
        pe = self.pos_embed.float()
        h0, w0 = h // 14 + 0.1, w // 14 + 0.1
        s = math.sqrt(n)
        grid = F.interpolate(pe[:, 1:].reshape(1, int(s), int(s), -1).permute(0, 3, 1, 2),
                             scale_factor=(h0 / s, w0 / s), mode="bicubic", antialias=False)
        return torch.cat((pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, pe.shape[-1])), dim=1)

    def get_intermediate_layers(self, x, idx):
        _, _, h, w = x.shape
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1), t), dim=1)
        t = t + self.interpolate_pos_encoding(t, h, w)
        outs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in idx:
                outs.append(t)
        outs = [self.norm(o) for o in outs]
        return tuple((o[:, 1:], o[:, 0]) for o in outs)


class _RCU(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(f, f, 3, 1, 1), nn.Conv2d(f, f, 3, 1, 1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _Fusion(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.resConfUnit1, self.resConfUnit2 = _RCU(f), _RCU(f)
        self.out_conv = nn.Conv2d(f, f, 1)

    def forward(self, *xs, size=None):
        out = xs[0]
        if len(xs) == 2:
            out = out + self.resConfUnit1(xs[1])
        out = self.resConfUnit2(out)
        kw = {"scale_factor": 2} if size is None else {"size": size}
        return self.out_conv(F.interpolate(out, **kw, mode="bilinear", align_corners=True))


class _DPTHead(nn.Module):
    def __init__(self, a, metric):
        super().__init__()
        oc, f = a.out_channels, a.features
        self.projects = nn.ModuleList(nn.Conv2d(a.hidden_size, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([nn.ConvTranspose2d(oc[0], oc[0], 4, 4), nn.ConvTranspose2d(oc[1], oc[1], 2, 2),
                                            nn.Identity(), nn.Conv2d(oc[3], oc[3], 3, 2, 1)])
        self.scratch = nn.Module()
        for i, c in enumerate(oc):
            setattr(self.scratch, f"layer{i + 1}_rn", nn.Conv2d(c, f, 3, 1, 1, bias=False))
        for k in range(1, 5):
            setattr(self.scratch, f"refinenet{k}", _Fusion(f))
        self.scratch.output_conv1 = nn.Conv2d(f, f // 2, 3, 1, 1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(f // 2, a.head_hidden_size, 3, 1, 1), nn.ReLU(True), nn.Conv2d(a.head_hidden_size, 1, 1),
            nn.Sigmoid() if metric else nn.ReLU(True), nn.Identity())

    def forward(self, feats, ph, pw):
        out = []
        for i, (x, _cls) in enumerate(feats):
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], ph, pw)
            out.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(o) for i, o in enumerate(out))
        p4 = s.refinenet4(l4, size=l3.shape[2:])
        p3 = s.refinenet3(p4, l3, size=l2.shape[2:])
        p2 = s.refinenet2(p3, l2, size=l1.shape[2:])
        p1 = s.refinenet1(p2, l1)
        o = F.interpolate(s.output_conv1(p1), (ph * 14, pw * 14), mode="bilinear", align_corners=True)
        return s.output_conv2(o)


class OriginalDepthAnythingV2(nn.Module):
    def __init__(self, a, metric=False, max_depth=20.0):
        super().__init__()
        self.a, self.metric, self.max_depth = a, metric, max_depth
        self.pretrained = _DINOv2(a)
        self.depth_head = _DPTHead(a, metric)

    def forward(self, x):
        ph, pw = x.shape[-2] // 14, x.shape[-1] // 14
        feats = self.pretrained.get_intermediate_layers(x, list(self.a.tapped_blocks))
        d = self.depth_head(feats, ph, pw)
        d = d * self.max_depth if self.metric else F.relu(d)
        return d.squeeze(1)


def _random_original(a, metric=False, max_depth=20.0, seed=0):
    torch.manual_seed(seed)
    m = OriginalDepthAnythingV2(a, metric, max_depth)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.1 if p.dim() > 1 else 0.05)
    return m.eval()


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("swiglu,metric", [(False, False), (True, False), (False, True)])
def test_converted_micro_matches_original(tmp_path, swiglu, metric):
    a = dataclasses.replace(ARCHS["micro"], swiglu=swiglu)
    orig = _random_original(a, metric, 10.0, seed=int(swiglu) + 2 * int(metric))
    torch.save(orig.state_dict(), tmp_path / "orig.pth")
    model = convert_depth_anything_v2(tmp_path / "orig.pth", a, metric=metric, max_depth=10)
    model.backbone.set_attn_implementation("eager")
    x = torch.randn(2, 3, 56, 56)  # native 4x4 grid: no position-embedding interpolation
    with torch.no_grad():
        ref = orig(x)
        got = model(pixel_values=x).predicted_depth
    assert float(ref.std()) > 1e-3  # not a degenerate all-zero map
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), float((got - ref).abs().max())
    # other sizes: transformers resizes the position grid to (h, w) directly, DINOv2 by a scale factor
    # with a 0.1 offset, so outputs differ slightly (relative 1e-2 bound on this tiny random model)
    x2 = torch.randn(1, 3, 70, 98)
    with torch.no_grad():
        ref2, got2 = orig(x2), model(pixel_values=x2).predicted_depth
    assert got2.shape == ref2.shape
    assert float((got2 - ref2).abs().max()) <= 1e-2 * float(ref2.abs().max()) + 1e-6


def test_cli_convert_vits_at_518(tmp_path, run_cli):
    orig = _random_original(ARCHS["vits"], seed=5)
    torch.save(orig.state_dict(), tmp_path / "depth_anything_v2_vits.pth")
    res = run_cli("convert-checkpoint", "--from", "depth-anything-v2", "--encoder", "vits",
                  tmp_path / "depth_anything_v2_vits.pth", tmp_path / "out")
    assert res.code == 0, res
    meta = read_metadata(tmp_path / "out")
    assert meta["arch"] == "vits" and meta["extra"]["converted_from"] == "depth-anything-v2"
    model = load_model(tmp_path / "out")
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        ref = orig(x)
        got = model(pixel_values=x).predicted_depth
        model.backbone.set_attn_implementation("eager")
        got_eager = model(pixel_values=x).predicted_depth
    # plain attention, as the original: same float32 result up to op order
    assert float((got_eager - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    # SDPA (the default): relative 1e-4 of the output range
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max()), float((got - ref).abs().max())
    # wrong encoder, unknown keys, pickles with code are refused
    r = run_cli("convert-checkpoint", "--encoder", "vitb", tmp_path / "depth_anything_v2_vits.pth", tmp_path / "o2")
    assert r.code == 2 and "wide" in r.err


def test_conversion_refuses_bad_input(tmp_path):
    a = ARCHS["micro"]
    sd = _random_original(a).state_dict()
    extra = dict(sd, **{"depth_head.extra.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="does not know"):
        convert_state_dict(extra, a)
    missing = {k: v for k, v in sd.items() if "refinenet2.out_conv" not in k}
    with pytest.raises(InputError, match="lacks"):
        convert_state_dict(missing, a)
    with pytest.raises(InputError, match="cls_token"):
        convert_state_dict({"x": torch.zeros(1)}, a)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"obj": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="weights-only"):
        read_state_dict(tmp_path / "evil.pth")
    torch.save({"model": {("module." + k): v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    assert set(read_state_dict(tmp_path / "wrapped.pth")) == set(sd)
