"""RGB images at the I/O boundary: uint8 (H, W, 3) in, uint8 (H, W, 3) out.

Readers accept PNG, JPEG, PPM/PGM, BMP, TIFF (and WebP). Every conversion is explicit: alpha is
dropped (not composited), greyscale is repeated into three channels, 16-bit samples become 8-bit by
``round(v / 257)`` (65535 -> 255). Floating-point images are refused (they are depth or HDR data,
not photographs). Images above :data:`~bridgedepth.io.common.MAX_IMAGE_PIXELS` are refused before
decoding (decompression bombs). Pixels are returned as stored; ``read_image(path, orient=True)``
(the predictor's and the web app's reads of photographs) turns them as the EXIF Orientation tag says.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from . import common
from .common import FormatError, InputError, atomic_write, read_file_bytes

READ_FORMATS = ("PNG", "JPEG", "MPO", "PPM", "BMP", "TIFF", "WEBP")
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".ppm": "PPM", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
# suffixes of the colour images the readers take (the formats above); folder listings (bridge predict,
# bridge sources) use this one set
IMAGE_SUFFIXES = frozenset(WRITE_FORMATS)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(path, data: bytes):
    """Open with Pillow (lazy), check the format and the pixel limit; returns the PIL image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise FormatError(path, f"refused as a possible decompression bomb: {e}") from None
    except UnidentifiedImageError:
        fmt = _signature(data)
        if fmt:  # the right magic, then bytes no decoder can parse
            raise FormatError(path, f"truncated or corrupt {fmt} header (the file starts as a {fmt} "
                                    f"but cannot be read: {len(data)} bytes)") from None
        raise FormatError(path, f"wrong magic: not an image file ({', '.join(READ_FORMATS)}); "
                                f"starts with {data[:8]!r}") from None
    except Exception as e:  # damaged headers
        raise FormatError(path, f"truncated or corrupt image header: {e}") from None
    if im.format not in READ_FORMATS:
        raise FormatError(path, f"{im.format} images are not supported; use one of {', '.join(READ_FORMATS)}")
    common.check_pixels(path, im.size[0], im.size[1], common.MAX_IMAGE_PIXELS)
    return im


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8", "JPEG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"))


def _signature(data: bytes) -> str | None:
    """The image format whose magic ``data`` starts with (None when it starts like none of them)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in _SIGNATURES if data.startswith(sig)), None)


def _rawmode(im) -> str:
    try:
        args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    except (IndexError, AttributeError, TypeError):
        return ""
    return args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")


def _is_16bit_colour(im) -> bool:
    return im.mode in ("RGB", "RGBA") and ";16" in _rawmode(im)


def _sixteen_to_eight(a: np.ndarray) -> np.ndarray:
    return np.rint(a.astype(np.float64) / 257.0).astype(np.uint8)


def _load(path, im):
    try:
        im.load()
    except Exception as e:  # OSError "image file is truncated", SyntaxError "broken PNG file", ...
        raise FormatError(path, f"truncated or corrupt {im.format}: {e}") from None


# EXIF Orientation (tag 0x0112) -> the pixels as a photo viewer shows them (values 2-8; 1 = as stored)
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored across the main diagonal
    6: lambda a: np.rot90(a, -1),  # stored turned 90 degrees anticlockwise: shown turned clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # mirrored across the other diagonal
    8: lambda a: np.rot90(a, 1),  # shown turned 90 degrees anticlockwise
}


def exif_orientation(im) -> int:
    """The EXIF Orientation of an opened PIL image (1 when absent or unreadable)."""
    try:
        v = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001  (damaged EXIF blocks must not stop the read)
        return 1
    return v if v in _ORIENT else 1


def read_image(path, *, orient: bool = False) -> np.ndarray:
    """Decode an image file into RGB uint8 (H, W, 3) (see the module doc for the conversions).

    ``orient``: turn the pixels as the file's EXIF Orientation tag says, as photo viewers,
    ``cv2.imread`` and diffusers' ``load_image`` show them (a phone photo taken upright is often stored
    sideways with Orientation 6): for photographs given to a model (``bridge predict``,
    ``bridgedepth.load(...).predict(path)``, the web app). Off by default, for paired data: an RGB-D
    frame's colour image stays aligned with its depth map as stored."""
    return read_image_info(path, orient=orient)[0]


def read_image_info(path, *, orient: bool = False) -> tuple[np.ndarray, dict]:
    """:func:`read_image` and :func:`image_info` of one file from one read."""
    p = Path(path)
    data = read_file_bytes(p, "image file")
    im = _open(p, data)
    info = _info(im)  # before decoding: Pillow's tile list is gone after load()
    rgb = _pixels(p, data, im)
    o = exif_orientation(im) if orient else 1  # the EXIF block is parsed only when asked for
    return (np.ascontiguousarray(_ORIENT[o](rgb)) if o != 1 else rgb), info


def _pixels(p: Path, data: bytes, im) -> np.ndarray:
    if _is_16bit_colour(im):
        # Pillow keeps only the high byte of 16-bit colour; decode the full samples with OpenCV instead.
        _load(p, im)  # still let Pillow find truncation
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
            raise FormatError(p, "could not decode the 16-bit colour samples")
        rgb = arr[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
        return np.ascontiguousarray(_sixteen_to_eight(rgb))
    _load(p, im)
    mode = im.mode
    if mode == "RGB":
        arr = np.asarray(im)
    elif mode in _ALPHA_MODES or mode == "P":
        arr = np.asarray(im.convert("RGBA"))[..., :3]  # alpha dropped, colours kept as stored
    elif mode in ("L", "1"):
        g = np.asarray(im.convert("L"))
        arr = np.repeat(g[..., None], 3, axis=2)
    elif mode in _SIXTEEN_BIT:
        g = np.asarray(im).astype(np.int64)
        if g.size and (g.min() < 0 or g.max() > 65535):
            raise FormatError(p, f"integer image with values {g.min()}..{g.max()} outside 16 bits")
        arr = np.repeat(_sixteen_to_eight(g)[..., None], 3, axis=2)
    elif mode == "F":
        raise FormatError(p, "floating-point image: not a photograph (a depth map? use read_depth / --encoding)")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(im.convert("RGB"))
    else:
        raise FormatError(p, f"image mode {mode!r} is not supported")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:  # pragma: no cover - defensive
        raise FormatError(p, f"decoded to {arr.shape} {arr.dtype}, expected (H, W, 3) uint8")
    return np.ascontiguousarray(arr)


def image_info(path) -> dict:
    """Header facts without decoding the pixels: format, mode (``RGB;16`` for 16-bit colour),
    bits per sample, shape [H, W, channels] as stored."""
    p = Path(path)
    return _info(_open(p, read_file_bytes(p, "image file")))


def _info(im) -> dict:
    bands = len(im.getbands())
    mode = im.mode
    bits = 8
    raw = _rawmode(im)
    if _is_16bit_colour(im):
        mode, bits = f"{im.mode};16", 16
    elif mode in _SIXTEEN_BIT:
        bits = 16 if (mode.startswith("I;16") or "16" in raw) else 32
    elif mode == "F":
        bits = 32
    elif mode == "1":
        bits = 1
    w, h = im.size
    return {"format": im.format, "mode": mode, "bits": bits, "shape": [h, w, bands] if bands > 1 else [h, w]}


def write_image(path, rgb, *, quality: int = 95) -> None:
    """Write RGB uint8 (H, W, 3) (or greyscale (H, W)) atomically; the format comes from the suffix
    (.png .jpg .jpeg .ppm .bmp .tif .tiff .webp)."""
    from PIL import Image

    p = Path(path)
    fmt = WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{p}: cannot tell the image format from the suffix {p.suffix!r}; "
                         f"use one of {', '.join(WRITE_FORMATS)}")
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise InputError(f"{p}: images are written from uint8 arrays, got {a.dtype} (convert explicitly)")
    if not (a.ndim == 3 and a.shape[2] == 3) and a.ndim != 2:
        raise InputError(f"{p}: expected an (H, W, 3) RGB or (H, W) greyscale array, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{p}: refusing to write an empty image of shape {a.shape}")
    im = Image.fromarray(np.ascontiguousarray(a))
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    im.save(buf, format=fmt, **kwargs)
    with atomic_write(p, "wb") as f:
        f.write(buf.getvalue())
