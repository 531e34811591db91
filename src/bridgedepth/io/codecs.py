"""Low-level containers: bytes <-> arrays for PFM, PGM, DPT, raw float32, 16-bit PNG, EXR, HDF5, NPY/NPZ.

These functions know file layouts, not units; ``bridgedepth.io.depth`` turns their arrays into metres.
Every decoder takes the path only to name it in a :class:`FormatError`.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from . import common
from .common import FormatError, check_pixels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
EXR_MAGIC = b"\x76\x2f\x31\x01"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DPT_TAG = 202021.25
DPT_MAGIC = np.float32(DPT_TAG).tobytes()  # b"PIEH", little-endian
_WHITESPACE = b" \t\r\n\v\f"


def _describe_start(data: bytes) -> str:
    return repr(data[:8])


def _size_check(path, got: int, need: int, what: str) -> None:
    if got < need:
        raise FormatError(path, f"truncated: {what} needs {need} bytes of pixel data, found {got}")
    if got > need:
        raise FormatError(path, f"wrong size: {what} needs {need} bytes of pixel data, found {got}")


def _header_tokens(path, data: bytes, count: int, *, comments: bool, fmt: str) -> tuple[list[bytes], int]:
    """Read ``count`` whitespace-separated header tokens (the magic first); returns the tokens and the
    offset of the first data byte (after exactly one whitespace byte following the last token)."""
    tokens: list[bytes] = []
    i, n = 0, len(data)
    while len(tokens) < count:
        while i < n and (data[i] in _WHITESPACE or (comments and data[i] == ord("#"))):
            if data[i] == ord("#"):
                while i < n and data[i] not in b"\r\n":
                    i += 1
            else:
                i += 1
        start = i
        while i < n and data[i] not in _WHITESPACE and i - start < 64:
            i += 1
        if i >= n or start == i:
            raise FormatError(path, f"truncated {fmt} header (found {len(tokens)} of {count} fields)")
        tokens.append(data[start:i])
    if data[i] not in _WHITESPACE:  # pragma: no cover - loop above stops on whitespace or n
        raise FormatError(path, f"malformed {fmt} header")
    return tokens, i + 1


def _int_token(path, tok: bytes, name: str, fmt: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise FormatError(path, f"malformed {fmt} header: {name} is {tok[:20]!r}, not an integer") from None


# --------------------------------------------------------------------------------------------- PFM
def decode_pfm(path, data: bytes) -> np.ndarray:
    """PFM (``Pf`` grey or ``PF`` colour): float32 (H, W) or (H, W, 3), rows top-to-bottom.
    The sign of the scale gives the byte order (negative = little-endian); rows are stored bottom-up."""
    if data[:2] not in (b"Pf", b"PF") or len(data) < 3 or data[2] not in _WHITESPACE:
        raise FormatError(path, f"wrong magic: not a PFM file (expected 'Pf' or 'PF', found {_describe_start(data)})")
    toks, off = _header_tokens(path, data, 4, comments=False, fmt="PFM")
    w = _int_token(path, toks[1], "width", "PFM")
    h = _int_token(path, toks[2], "height", "PFM")
    try:
        scale = float(toks[3])
    except ValueError:
        raise FormatError(path, f"malformed PFM header: scale is {toks[3][:20]!r}") from None
    if scale == 0 or not np.isfinite(scale):
        raise FormatError(path, f"malformed PFM header: scale must be a non-zero number, found {scale}")
    check_pixels(path, w, h)
    ch = 3 if toks[0] == b"PF" else 1
    _size_check(path, len(data) - off, w * h * ch * 4, f"a {w}x{h}x{ch} PFM")
    dtype = "<f4" if scale < 0 else ">f4"
    arr = np.frombuffer(data, dtype=dtype, count=w * h * ch, offset=off)
    arr = arr.reshape((h, w, ch) if ch == 3 else (h, w))
    return np.ascontiguousarray(arr[::-1], dtype=np.float32)  # one copy: flip, native byte order


def encode_pfm(arr: np.ndarray) -> bytes:
    """Grey PFM, little-endian (scale -1.0), rows bottom-to-top as the format requires."""
    a = np.ascontiguousarray(np.asarray(arr, dtype="<f4")[::-1])
    h, w = a.shape
    return f"Pf\n{w} {h}\n-1.0\n".encode("ascii") + a.tobytes()


# --------------------------------------------------------------------------------------------- PGM
def decode_pgm16(path, data: bytes, *, byteorder: str) -> tuple[np.ndarray, int]:
    """A binary (P5) PGM with 16-bit samples, read in ``byteorder`` ('>' as the standard says, or '<'
    for files whose writer ignored it). Returns (uint16 (H, W), maxval)."""
    if data[:2] != b"P5" or len(data) < 3 or data[2] not in _WHITESPACE + b"#":
        raise FormatError(path, f"wrong magic: not a binary PGM (expected 'P5', found {_describe_start(data)})")
    toks, off = _header_tokens(path, data, 4, comments=True, fmt="PGM")
    w = _int_token(path, toks[1], "width", "PGM")
    h = _int_token(path, toks[2], "height", "PGM")
    maxval = _int_token(path, toks[3], "maxval", "PGM")
    check_pixels(path, w, h)
    if not 0 < maxval < 65536:
        raise FormatError(path, f"malformed PGM header: maxval {maxval} outside 1..65535")
    if maxval < 256:
        raise FormatError(path, f"8-bit PGM (maxval {maxval}): a depth PGM has 16-bit samples (maxval > 255)")
    _size_check(path, len(data) - off, w * h * 2, f"a {w}x{h} 16-bit PGM")
    arr = np.frombuffer(data, dtype=byteorder + "u2", count=w * h, offset=off).reshape(h, w)
    return arr.astype(np.uint16), maxval


def encode_pgm16(arr: np.ndarray) -> bytes:
    a = np.asarray(arr)
    h, w = a.shape
    return f"P5\n{w} {h}\n65535\n".encode("ascii") + a.astype(">u2").tobytes()


# --------------------------------------------------------------------------------------------- DPT
def decode_dpt(path, data: bytes) -> np.ndarray:
    """MPI-Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, float32 depth; little-endian."""
    if len(data) < 12:
        if data[:4] == DPT_MAGIC[: len(data[:4])]:
            raise FormatError(path, f"truncated: a DPT header needs 12 bytes, found {len(data)}")
        raise FormatError(path, f"wrong magic: not a DPT file (found {_describe_start(data)})")
    if data[:4] != DPT_MAGIC:
        tag = float(np.frombuffer(data, "<f4", 1)[0])
        raise FormatError(path, f"wrong magic: DPT tag is {tag!r}, expected {DPT_TAG} (found {_describe_start(data)})")
    w, h = (int(v) for v in np.frombuffer(data, "<i4", 2, offset=4))
    check_pixels(path, w, h)
    _size_check(path, len(data) - 12, w * h * 4, f"a {w}x{h} DPT")
    return np.frombuffer(data, "<f4", w * h, offset=12).reshape(h, w).astype(np.float32)


def encode_dpt(arr: np.ndarray) -> bytes:
    a = np.asarray(arr, dtype="<f4")
    h, w = a.shape
    return DPT_MAGIC + np.array([w, h], dtype="<i4").tobytes() + a.tobytes()


# --------------------------------------------------------------------------------------------- raw
def decode_raw_f32(path, data: bytes, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    check_pixels(path, w, h)
    _size_check(path, len(data), h * w * 4, f"raw float32 of shape {h}x{w}")
    return np.frombuffer(data, "<f4").reshape(h, w).astype(np.float32)


def encode_raw_f32(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype="<f4").tobytes()


# --------------------------------------------------------------------------------------------- PNG
def decode_png16(path, data: bytes) -> np.ndarray:
    """A single-channel 16-bit PNG as uint16 (H, W). 8-bit or colour PNGs are refused."""
    from PIL import Image

    if not data.startswith(PNG_MAGIC):
        raise FormatError(path, f"wrong magic: not a PNG file (found {_describe_start(data)})")
    if len(data) < 33:
        raise FormatError(path, f"truncated: a PNG header needs 33 bytes, found {len(data)}")
    w, h = (int(v) for v in np.frombuffer(data, ">u4", 2, offset=16))
    bit_depth, color_type = data[24], data[25]
    check_pixels(path, w, h)
    if bit_depth != 16 or color_type != 0:
        kinds = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
        raise FormatError(
            path, f"a depth PNG must be single-channel 16-bit; this one is {bit_depth}-bit "
            f"{kinds.get(color_type, f'colour type {color_type}')}",
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.array(im)
    except Exception as e:  # PIL raises OSError / SyntaxError / ValueError on damaged streams
        raise FormatError(path, f"truncated or corrupt PNG: {e}") from None
    if arr.shape != (h, w):  # pragma: no cover - defensive: PIL decoded something unexpected
        raise FormatError(path, f"decoded shape {arr.shape} does not match the header {h}x{w}")
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > 65535:  # pragma: no cover
            raise FormatError(path, "16-bit PNG decoded to values outside 0..65535")
        arr = arr.astype(np.uint16)
    return arr


def encode_png16(arr: np.ndarray) -> bytes:
    import cv2

    a = np.ascontiguousarray(arr, dtype=np.uint16)
    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise FormatError(None, "OpenCV could not encode the 16-bit PNG")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------- NPY / NPZ
def _check_npy_header(path, f, what: str = ".npy") -> None:
    """Read a .npy header from ``f`` (then rewind) and refuse a shape beyond the pixel limit before
    NumPy allocates it (a few bytes can declare terabytes)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _fortran, dtype = reader(f)
    except Exception as e:  # noqa: BLE001 - any header damage
        raise FormatError(path, f"truncated or corrupt {what} header: {e}") from None
    n = 1
    for dim in shape:
        n *= int(dim)
    limit = 4 * common.MAX_IMAGE_PIXELS  # up to 4 channels of the largest image
    if n > limit:
        raise FormatError(path, f"{what} declares shape {shape} ({n} values): exceeds the limit of {limit} values "
                                "(possible decompression bomb); raise bridgedepth.io.common.MAX_IMAGE_PIXELS "
                                "if it is genuine")
    f.seek(0)


def decode_npy(path, data: bytes) -> np.ndarray:
    if not data.startswith(NPY_MAGIC):
        raise FormatError(path, f"wrong magic: not a .npy file (found {_describe_start(data)})")
    _check_npy_header(path, io.BytesIO(data))
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        msg = str(e)
        if "allow_pickle" in msg or "Object arrays" in msg:
            raise FormatError(path, "holds Python objects (pickle); refused") from None
        raise FormatError(path, f"truncated or corrupt .npy: {msg}") from None
    except Exception as e:
        raise FormatError(path, f"truncated or corrupt .npy: {e}") from None


def decode_npz(path, data: bytes) -> dict[str, np.ndarray]:
    if not data.startswith(ZIP_MAGIC):
        raise FormatError(path, f"wrong magic: not a .npz (zip) file (found {_describe_start(data)})")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for name in z.zip.namelist():
                with z.zip.open(name) as member:
                    _check_npy_header(path, io.BytesIO(member.read(4096)), f".npz member {name!r}")
            return {k: z[k] for k in z.files}
    except FormatError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise FormatError(path, "holds Python objects (pickle); refused") from None
        raise FormatError(path, f"truncated or corrupt .npz: {e}") from None
    except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, OSError, NotImplementedError ...
        raise FormatError(path, f"truncated or corrupt .npz: {type(e).__name__}: {e}") from None


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def encode_npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- EXR
def _openexr(path=None):
    try:
        import OpenEXR
    except ImportError:
        raise FormatError(
            path, "reading or writing EXR needs the OpenEXR package: pip install 'bridgedepth[formats]' "
            "(or pip install OpenEXR)",
        ) from None
    return OpenEXR


EXR_DEPTH_CHANNELS = ("Z", "depth", "Depth", "D", "Y", "R")


def decode_exr(path, data: bytes, channel: str | None = None) -> np.ndarray:
    """One channel of a scanline or tiled EXR as float32 (H, W). Picks ``channel`` if given, else the
    first of Z / depth / Depth / D / Y / R present (also as ``LAYER.Z``), else the only channel."""
    if not data.startswith(EXR_MAGIC):
        raise FormatError(path, f"wrong magic: not an OpenEXR file (found {_describe_start(data)})")
    OpenEXR = _openexr(path)
    try:
        with OpenEXR.File(str(path), separate_channels=True, header_only=True) as f:
            dw = f.header().get("dataWindow")
    except Exception as e:
        raise FormatError(path, f"truncated or corrupt EXR: {e}") from None
    if dw is not None:
        (x0, y0), (x1, y1) = (tuple(int(v) for v in dw[0]), tuple(int(v) for v in dw[1]))
        check_pixels(path, x1 - x0 + 1, y1 - y0 + 1)
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            chans = {name: c.pixels for name, c in f.channels().items()}
    except Exception as e:
        raise FormatError(path, f"truncated or corrupt EXR: {e}") from None
    if channel is not None:
        if channel not in chans:
            raise FormatError(path, f"no EXR channel {channel!r}; channels: {sorted(chans)}")
        name = channel
    else:
        name = next((c for c in EXR_DEPTH_CHANNELS if c in chans), None)
        if name is None:
            name = next((c for c in chans for want in EXR_DEPTH_CHANNELS if c.endswith("." + want)), None)
        if name is None:
            if len(chans) != 1:
                raise FormatError(path, f"cannot tell which EXR channel is depth among {sorted(chans)}; "
                                        "pass channel=NAME")
            name = next(iter(chans))
    arr = np.asarray(chans[name])
    if arr.ndim != 2:
        raise FormatError(path, f"EXR channel {name!r} has shape {arr.shape}, expected (H, W)")
    return arr.astype(np.float32)


def write_exr_file(tmp_path, arr: np.ndarray, channel: str = "Z") -> None:
    OpenEXR = _openexr(tmp_path)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {channel: np.ascontiguousarray(arr, dtype=np.float32)}) as f:
        f.write(str(tmp_path))


# --------------------------------------------------------------------------------------------- HDF5
def _h5py(path=None):
    try:
        import h5py
    except ImportError:
        raise FormatError(path, "reading or writing HDF5 needs the h5py package: pip install 'bridgedepth[formats]' "
                                "(or pip install h5py)") from None
    return h5py


def decode_hdf5_dataset(path, data: bytes, key: str | None) -> np.ndarray:
    if not (data.startswith(HDF5_MAGIC) or is_hdf5(data)):
        raise FormatError(path, f"wrong magic: not an HDF5 file (found {_describe_start(data)})")
    h5py = _h5py(path)
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            names: list[str] = []
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            if key is None:
                if "dataset" in names:  # Hypersim's name
                    key = "dataset"
                elif len(names) == 1:
                    key = names[0]
                else:
                    raise FormatError(path, f"cannot tell which HDF5 dataset is depth among {names}; pass key=NAME")
            if key not in names:
                raise FormatError(path, f"no HDF5 dataset {key!r}; datasets: {names}")
            ds = f[key]
            if ds.ndim != 2:
                raise FormatError(path, f"HDF5 dataset {key!r} has shape {ds.shape}, expected (H, W)")
            check_pixels(path, ds.shape[1], ds.shape[0])
            return np.asarray(ds[()])
    except FormatError:
        raise
    except Exception as e:
        raise FormatError(path, f"truncated or corrupt HDF5: {e}") from None


def write_hdf5_file(tmp_path, arr: np.ndarray, key: str = "dataset") -> None:
    h5py = _h5py(tmp_path)
    with h5py.File(str(tmp_path), "w") as f:
        f.create_dataset(key, data=arr, compression="gzip", compression_opts=4)


def is_hdf5(data: bytes) -> bool:
    """HDF5's superblock sits at byte 0, 512, 1024, 2048, ... (a user block may precede it)."""
    off = 0
    while off + 8 <= len(data) and off <= 1 << 20:
        if data[off:off + 8] == HDF5_MAGIC:
            return True
        off = 512 if off == 0 else off * 2
    return False
