"""Inference: Depth-Anything-V2 preprocessing, batched prediction, results at the input resolution.

Preprocessing is Depth-Anything-V2's ``image2tensor``: RGB / 255, resize with *lower bound* + keep aspect
ratio (the shorter side becomes ``input_size``, the longer side follows the aspect ratio), both sides
rounded to the nearest multiple of 14 (and never below ``input_size``: ``constrain_to_multiple_of`` with
``min_val``), bicubic (OpenCV ``INTER_CUBIC`` for arrays, PyTorch bicubic for tensors), ImageNet mean/std.
``fixed_size=True`` resizes every image to ``input_size x input_size`` instead (aspect not kept) so that
images of any shape batch together. The prediction is resized back to the input resolution bilinearly
with ``align_corners=True`` (as Depth-Anything-V2's ``infer_image``).

Conventions: a relative model predicts **disparity** (affine-invariant inverse depth: larger = nearer);
a metric model (or a relative model with a scale head, ``metric=True``) predicts **depth** in metres.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io import atomic_write, colorize, read_image, write_image
from .model import IMAGENET_MEAN, IMAGENET_STD, apply_scale, forward_with_features, load_model, load_scale_head

PATCH = 14
PNG16_KEY = "bridgedepth"


def describe_values(kind: str) -> dict:
    """What a prediction's values are: ``kind``, ``unit`` and a sentence (for metadata and screens)."""
    if kind == "depth":
        return {"kind": "depth", "unit": "m", "meaning": "metric depth in metres (smaller = nearer)"}
    return {"kind": "disparity", "unit": "relative",
            "meaning": "relative disparity: affine-invariant inverse depth, larger = nearer, no unit "
                       "(scale and shift unknown)"}


# ------------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------------


def _constrain(x: float, multiple: int, min_val: int) -> int:
    y = int(np.round(x / multiple) * multiple)
    if y < min_val:
        y = int(math.ceil(x / multiple) * multiple)
    return y


def target_size(height: int, width: int, input_size: int = 518, *, fixed_size: bool = False,
                multiple: int = PATCH) -> tuple[int, int]:
    """(H', W') fed to the network for an image of (height, width) (Depth-Anything-V2's ``Resize``)."""
    if fixed_size:
        s = _constrain(input_size, multiple, 0)
        return s, s
    scale = max(input_size / height, input_size / width)  # lower_bound: fit the shorter side
    return _constrain(scale * height, multiple, input_size), _constrain(scale * width, multiple, input_size)


def _to_rgb_array(image: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        image = read_rgb(image)
    elif not isinstance(image, np.ndarray):  # PIL image
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def preprocess(rgb: np.ndarray, input_size: int = 518, *, fixed_size: bool = False,
               multiple: int = PATCH) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float32 tensor (1, 3, H', W'), Depth-Anything-V2's way.

    Fused: one OpenCV bicubic resize on float32 and one multiply-add per channel into the output buffer
    (``(x / 255 - mean) / std`` folded into ``x * a + b``).
    """
    import cv2

    rgb = _to_rgb_array(rgb)
    h, w = rgb.shape[:2]
    th, tw = target_size(h, w, input_size, fixed_size=fixed_size, multiple=multiple)
    img = cv2.resize(rgb.astype(np.float32), (tw, th), interpolation=cv2.INTER_CUBIC)
    a = (1.0 / (255.0 * np.asarray(IMAGENET_STD, np.float32))).astype(np.float32)
    b = (-np.asarray(IMAGENET_MEAN, np.float32) / np.asarray(IMAGENET_STD, np.float32)).astype(np.float32)
    out = np.empty((1, 3, th, tw), np.float32)
    for c in range(3):
        np.multiply(img[:, :, c], a[c], out=out[0, c])
        out[0, c] += b[c]
    return torch.from_numpy(out)


def normalize01(images01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=images01.dtype, device=images01.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images01.dtype, device=images01.device)[:, None, None]
    return (images01 - mean) / std


def default_input_size(model) -> int:
    meta = getattr(model, "bridge_meta", None) or {}
    if meta.get("input_size"):
        return int(meta["input_size"])
    arch = getattr(model, "bridge_arch", None)
    if arch:
        from .registry import get_arch

        return get_arch(arch).image_size
    return 518


def predict_tensor(
    model,
    images01: torch.Tensor,
    input_size: int | None = None,
    *,
    fixed_size: bool = False,
    output: str = "disparity",
) -> torch.Tensor:
    """Differentiable prediction for a batch (B, 3, H, W) of float images in [0, 1] -> (B, H, W).

    Resizes (bicubic, Depth-Anything-V2 sizes), normalises, runs the model and resizes back (bilinear,
    align_corners=True). Gradients flow to ``images01`` and to the model (for the D2I depth reward and for
    pseudo-labelling). ``output="disparity"`` returns disparity for every head (a metric head's depth is
    inverted: 1 / depth); ``output="raw"`` returns the head's own output (disparity or metres).
    """
    if images01.dim() != 4 or images01.shape[1] != 3:
        raise ValueError(f"images01 must be (B, 3, H, W), got {tuple(images01.shape)}")
    h, w = images01.shape[-2:]
    size = input_size or default_input_size(model)
    th, tw = target_size(h, w, size, fixed_size=fixed_size, multiple=int(model.config.patch_size))
    x = images01
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False)
    x = normalize01(x)
    pred = model(pixel_values=x).predicted_depth
    if (th, tw) != (h, w):
        pred = F.interpolate(pred[:, None], size=(h, w), mode="bilinear", align_corners=True)[:, 0]
    if output == "disparity" and model.config.depth_estimation_type == "metric":
        pred = 1.0 / pred.clamp_min(1e-6)
    elif output not in ("disparity", "raw"):
        raise ValueError(f"output must be 'disparity' or 'raw', got {output!r}")
    return pred


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


def _colorize(values: np.ndarray, valid: np.ndarray | None, kind: str, grayscale: bool) -> np.ndarray:
    """:func:`bridgedepth.io.colorize`: Spectral_r, near = warm (red), far = blue, invalid = black, range =
    min..max of the valid values; ``grayscale``: the ``gray`` map, near = white."""
    return colorize(values, valid, kind=kind, cmap="gray" if grayscale else "Spectral_r")


@dataclass
class DepthResult:
    """One prediction at the input resolution.

    ``values``: float32 (H, W); ``kind``: ``"disparity"`` (relative inverse depth, larger = nearer) or
    ``"depth"`` (metres). ``rgb`` is the input image (for side-by-side output).
    """

    values: np.ndarray
    kind: str
    rgb: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def disparity(self) -> np.ndarray:
        if self.kind == "disparity":
            return self.values
        return np.where(self.values > 0, 1.0 / np.maximum(self.values, 1e-12), 0).astype(np.float32)

    @property
    def depth(self) -> np.ndarray:
        if self.kind != "depth":
            raise InputError("this prediction is relative disparity; depth in metres needs a metric model")
        return self.values

    def colorize(self, grayscale: bool = False) -> np.ndarray:
        """RGB uint8 (H, W, 3): Spectral_r, near = red, far = blue (grayscale: near = white)."""
        return _colorize(self.values, None, self.kind, grayscale)

    def side_by_side(self, grayscale: bool = False) -> np.ndarray:
        if self.rgb is None:
            raise InputError("side-by-side output needs the input image")
        return np.concatenate([self.rgb, self.colorize(grayscale)], axis=1)

    def save(self, path: str | os.PathLike, what: str | None = None, *, grayscale: bool = False) -> Path:
        """Write one output kind (atomically): ``color`` / ``side-by-side`` (PNG/JPG), ``png16``, ``npy``.

        ``what`` defaults from the suffix: ``.npy`` -> npy, otherwise color.
        """
        p = Path(path)
        what = what or ("npy" if p.suffix == ".npy" else "color")
        if what == "npy":
            with atomic_write(p, "wb") as f:
                np.save(f, self.values.astype(np.float32))
        elif what == "png16":
            write_png16(p, self.values, self.kind)
        elif what == "color":
            write_rgb(p, self.colorize(grayscale))
        elif what == "side-by-side":
            write_rgb(p, self.side_by_side(grayscale))
        else:
            raise InputError(f"unknown output kind '{what}'; use color, png16, npy or side-by-side")
        return p


# ------------------------------------------------------------------------------------------------
# Files (atomic, through bridgedepth.io)
# ------------------------------------------------------------------------------------------------


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a photograph file, turned as its EXIF Orientation says (as a photo viewer
    shows it: :func:`bridgedepth.io.read_image` with ``orient=True``)."""
    return read_image(path, orient=True)


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    write_image(path, rgb)


def write_png16(path: str | os.PathLike, values: np.ndarray, kind: str) -> float:
    """16-bit PNG of disparity or metric depth; ``value = png / scale`` with ``scale`` (and the kind and
    unit) in the PNG text chunk ``bridgedepth`` (JSON). The scale maps the largest value to 65535, so the
    quantisation step is max/65535. Invalid / non-finite values are stored as 0. Returns the scale."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    v = np.asarray(values, np.float64)
    ok = np.isfinite(v) & (v > 0)
    vmax = float(v[ok].max()) if ok.any() else 1.0
    scale = 65535.0 / vmax
    q = np.zeros(v.shape, np.uint16)
    q[ok] = np.clip(np.round(v[ok] * scale), 0, 65535).astype(np.uint16)
    info = PngInfo()
    info.add_text(PNG16_KEY, json.dumps({
        "kind": kind, "unit": "m" if kind == "depth" else "relative", "scale": scale,
        "decode": "value = png / scale; 0 = invalid",
    }))
    with atomic_write(Path(path), "wb") as f:
        Image.fromarray(q).save(f, format="PNG", pnginfo=info)
    return scale


def read_png16(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Inverse of :func:`write_png16`: (float32 values, metadata)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            meta = json.loads(im.text[PNG16_KEY]) if PNG16_KEY in getattr(im, "text", {}) else None
            arr = np.asarray(im).astype(np.float64)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable 16-bit PNG ({e})") from None
    if meta is None:
        raise InputError(f"{path}: no '{PNG16_KEY}' metadata (not written by bridge predict)")
    return (arr / meta["scale"]).astype(np.float32), meta


# ------------------------------------------------------------------------------------------------
# Predictor
# ------------------------------------------------------------------------------------------------


PRECISIONS = ("fp32", "bf16", "int8")


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively (CPU: AVX512-BF16 or AMX; CUDA: compute capability 8+).
    Elsewhere ``precision="bf16"`` still runs, emulated and usually slower than fp32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        probes = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(p()) for p in probes if p is not None)
    return False


def quantize_int8(model, *, inplace: bool = False):
    """``model`` with every ``nn.Linear`` replaced by PyTorch's dynamically quantised int8 linear layer
    (weights int8 per tensor, activations quantised per batch at run time; CPU only). The DPT neck and
    head's convolutions stay fp32. Agreement with fp32 is measured in docs/performance.md."""
    import warnings

    from torch import nn

    if any(p.device.type != "cpu" for p in model.parameters()):
        raise InputError("precision int8 (dynamic quantisation) runs on the CPU only; use bf16 on a GPU")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=inplace)
    q = model if inplace else q
    for attr in ("bridge_arch", "bridge_meta"):
        if hasattr(model, attr):
            setattr(q, attr, getattr(model, attr))
    return q


def cast_bf16_weights(model, *, inplace: bool = False):
    """``model`` (a copy unless ``inplace``) with the weights of its linear layers and convolutions in
    bfloat16, for running under bf16 autocast: autocast then has no weight to cast per call (it caches
    casts only for trainable weights), while normalisations keep fp32 weights and run in fp32."""
    import copy

    from torch import nn

    m = model if inplace else copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            mod.to(torch.bfloat16)
    return m


def _frozen_compile(model):
    """``torch.compile(model)`` whose (lazy) compilations run with inductor's ``freezing`` on. The flag is
    read when a graph compiles, at a call, not when ``torch.compile`` is called; ``options={"freezing":
    True}`` did not reach it here (torch 2.13: the profile still showed unfrozen ``addmm``), so every
    call runs inside the config patch (microseconds). The patch sets a process-wide flag: calls hold one
    lock, so that two threads' patches cannot interleave and leave the flag on for everything else."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)

    def forward(*args, **kwargs):
        with _COMPILE_LOCK, inductor_config.patch(freezing=True):
            return compiled(*args, **kwargs)

    return forward


_COMPILE_LOCK = threading.Lock()


class Predictor:
    """Batched inference at the input resolution.

    ``Predictor(model, input_size=518)``; ``metric=True`` returns metres (metric head, or a relative model
    with a scale head); ``fixed_size=True`` feeds ``input_size`` squares. Speed options (see
    docs/performance.md): ``fast`` runs an inference-only copy of the model with a fused QKV projection and
    channels-last DPT head (:mod:`bridgedepth.mde.fast`; on by default in :meth:`from_pretrained`, off for a
    model you pass, which stays untouched), ``compile`` wraps it in ``torch.compile`` with inductor's
    weight freezing (a one-off compile per input shape, 13-17 s for vits on 2 CPU cores: worth it for
    many images of one size, e.g. video frames or ``fixed_size``; not with int8). ``precision``:
    ``"fp32"`` (default), ``"bf16"`` (bfloat16 autocast: matrix products and convolutions in bf16,
    normalisations and the output in fp32; fast where :func:`bf16_native`), ``"int8"`` (the linear
    layers dynamically quantised, CPU only: :func:`quantize_int8`). Runs under ``torch.inference_mode``.
    """

    def __init__(
        self,
        model,
        input_size: int | None = None,
        *,
        metric: bool = False,
        scale_head=None,
        fixed_size: bool = False,
        device: str | torch.device | None = None,
        _owned: bool = False,
        fast: bool = False,
        compile: bool = False,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.input_size = int(input_size or default_input_size(model))
        self.patch = int(model.config.patch_size)  # network sizes are multiples of the patch size
        self.fixed_size = fixed_size
        self.is_metric_head = model.config.depth_estimation_type == "metric"
        self.scale_head = scale_head.eval().to(self.device) if scale_head is not None else None
        if metric and not self.is_metric_head and self.scale_head is None:
            where = getattr(model, "name_or_path", "") or "this model"
            raise InputError(f"metric output needs a metric model or a checkpoint with a scale head; {where} "
                             "predicts relative disparity and has no scale_head.safetensors (the shipped toy "
                             "depth model is relative). Train one with `bridge train --stage metric` or "
                             "`--stage scale-head` (`make demo` leaves both in runs/demo/metric/last and "
                             "runs/demo/scale-head/last)")
        self.metric = metric
        if fast:
            from .fast import optimize_for_inference

            self.model = optimize_for_inference(self.model, inplace=_owned)
            _owned = True
        self.precision = precision
        if precision == "int8":
            self.model = quantize_int8(self.model, inplace=_owned)
        elif precision == "bf16":
            if not bf16_native(self.device):
                import warnings

                warnings.warn(f"precision bf16 on {self.device} without native bfloat16 (AVX512-BF16 / AMX, or a "
                              "GPU of compute capability 8+): it runs emulated, measured 5.6x slower than fp32 "
                              "on an AVX2 CPU (docs/performance.md); int8 is the fast CPU option there",
                              RuntimeWarning, stacklevel=2)
            self.model = cast_bf16_weights(self.model, inplace=_owned)
        if compile and precision == "int8":
            raise InputError("compile: not with precision int8 (its dynamically quantised linear layers do not "
                             "compile); use fp32 or bf16")
        # freezing: inductor folds the (fixed) weights into the graph as constants and prepacks them for
        # oneDNN/MKL, fusing the element-wise work around the matrix products: 1.20x transformers SDPA in
        # fp32 on 2 CPU threads (median of 6 runs) against 1.11x eager (docs/performance.md). One compile
        # per input shape.
        self._forward = _frozen_compile(self.model) if compile else self.model

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | os.PathLike, **kwargs) -> "Predictor":
        model = load_model(ckpt_dir)
        scale_head = load_scale_head(ckpt_dir) if kwargs.get("metric") else None
        kwargs.setdefault("fast", True)
        return cls(model, scale_head=scale_head, _owned=True, **kwargs)

    @property
    def kind(self) -> str:
        """What results hold: ``"depth"`` (metres) or ``"disparity"`` (relative)."""
        return "depth" if (self.metric or self.is_metric_head) else "disparity"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Network output for a preprocessed batch: disparity (relative), metres (metric)."""
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self._run_fp(x).float()
        return self._run_fp(x)

    def _run_fp(self, x: torch.Tensor) -> torch.Tensor:
        if self.metric and not self.is_metric_head:
            pred, feats = forward_with_features(self.model, x)
            log_s, shift = self.scale_head(feats[-1])
            return apply_scale(pred, log_s, shift, self.scale_head.max_depth)
        return self._forward(pixel_values=x).predicted_depth

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[Any]) -> list[DepthResult]:
        """Predict a list of images (arrays, PIL images or paths); same-size inputs run as one batch."""
        rgbs = [_to_rgb_array(im) for im in images]
        xs = [preprocess(r, self.input_size, fixed_size=self.fixed_size, multiple=self.patch) for r in rgbs]
        out: list[DepthResult | None] = [None] * len(rgbs)
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(tuple(x.shape[-2:]), []).append(i)
        for idx in groups.values():
            x = torch.cat([xs[i] for i in idx]).to(self.device)
            if self.model.dtype != x.dtype and self.precision == "fp32":
                x = x.to(self.model.dtype)
            pred = self._run(x).float()
            for j, i in enumerate(idx):
                h, w = rgbs[i].shape[:2]
                p = F.interpolate(pred[j : j + 1, None], size=(h, w), mode="bilinear", align_corners=True)[0, 0]
                out[i] = DepthResult(p.cpu().numpy().astype(np.float32), self.kind, rgbs[i],
                                     {**describe_values(self.kind), "input_size": self.input_size,
                                      "network_size": list(x.shape[-2:])})
        return out  # type: ignore[return-value]

    def predict(self, image: Any) -> DepthResult:
        """One image (RGB uint8 array, PIL image or path) -> :class:`DepthResult` at its resolution."""
        return self.predict_batch([image])[0]

    def predict_iter(self, images: Iterable[Any], batch_size: int = 1):
        """Yield results in order, ``batch_size`` images at a time."""
        buf: list[Any] = []
        for im in images:
            buf.append(im)
            if len(buf) >= batch_size:
                yield from self.predict_batch(buf)
                buf = []
        if buf:
            yield from self.predict_batch(buf)


def load(ckpt_dir: str | os.PathLike, **kwargs) -> Predictor:
    """A :class:`Predictor` for a checkpoint directory (``bridgedepth.load()`` without one uses the
    shipped toy depth model; that default is resolved above this package, in :mod:`bridgedepth`)."""
    if ckpt_dir is None:
        raise InputError("no model given: pass a checkpoint directory (bridgedepth.load() without one "
                         "uses the shipped toy depth model)")
    return Predictor.from_pretrained(ckpt_dir, **kwargs)
