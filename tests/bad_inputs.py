"""The bad-input corpus (docs/reliability.md): files of every format the readers support, made bad in
every way we know, built at test time from the real fixtures in ../shared/data/rgbd plus a few
written here. Each entry: (name, build(dir) -> path, read(path) -> anything, expected error type,
regex the message must match). Shared by tests/test_bad_inputs.py and tests/test_fuzz.py (seeds)."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bridgedepth.io import FormatError, read_depth, read_image, write_depth
from bridgedepth.io import codecs as C

RGBD = "rgbd"

# real fixture -> (encoding, read parameters)
REAL_DEPTH = {
    "nyu_sync/depth/sync_depth_00000.png": ("png-mm", {}),
    "kitti_annotated/depth/0000000005.png": ("png-kitti", {}),
    "open3d/other_formats/TUM_depth.png": ("png-tum", {}),
    "open3d/other_formats/SUN_depth.png": ("png-sun3d", {}),
    "open3d/other_formats/NYU_depth.pgm": ("pgm-nyu-raw", {}),
    "stereo/SCENE_FLOW/disparity/left/A-0032-0006.pfm": ("pfm", {}),
    "stereo/MIDDLEBURY_2014/trainingQ/Motorcycle/disp0GT.pfm": ("pfm-disparity", {"focal": 999.421, "baseline": 0.193}),
    "stereo/KITTI_2015/training/disp_occ_0/000046_10.png": ("png-disparity-kitti", {"focal": 721.5, "baseline": 0.54}),
}
REAL_IMAGES = ["nyu_sync/rgb/rgb_00000.jpg", "kitti_annotated/rgb/0000000050.png", "open3d/other_formats/NYU_color.ppm"]
# encodings without a real fixture: written here from a smooth depth ramp
SYNTH_DEPTH = {"dpt": {}, "npy": {}, "npz": {}, "exr": {}, "hypersim-hdf5": {"focal": 400.0}, "pgm-mm": {},
               "png-cm": {}, "eth3d-raw": {"shape": "24x32"}}


@dataclass
class Case:
    name: str
    build: Callable[[Path], Path]
    read: Callable[[Path], Any]
    error: type
    match: str
    cli: tuple | None = None  # `bridge ...` arguments (the path is appended) that must fail cleanly


def _ramp(h=24, w=32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (1.0 + 0.1 * yy + 0.05 * xx).astype(np.float32)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_size(w: int, h: int, bit_depth: int = 16, colour: int = 0) -> bytes:
    """A valid-looking PNG whose IHDR claims ``w`` x ``h`` (a decompression bomb when large)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return C.PNG_MAGIC + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _copy_from(fixtures: Path, rel: str, transform: Callable[[bytes], bytes], name: str):
    def build(d: Path) -> Path:
        src = fixtures / RGBD / rel
        out = d / f"{name}{src.suffix}"
        out.write_bytes(transform(src.read_bytes()))
        return out
    return build


def _write_synth(enc: str, params: dict, transform: Callable[[bytes], bytes], name: str, depth=None):
    suffix = {"hypersim-hdf5": ".hdf5", "eth3d-raw": ".raw", "pgm-mm": ".pgm", "png-cm": ".png"}.get(enc, "." + enc)

    def build(d: Path) -> Path:
        good = d / f"{name}.good{suffix}"
        write_depth(good, _ramp() if depth is None else depth, enc, **params)
        out = d / f"{name}{suffix}"
        out.write_bytes(transform(good.read_bytes()))
        good.unlink()
        return out
    return build


def _raw(data: bytes | Callable[[], bytes], suffix: str, name: str):
    def build(d: Path) -> Path:
        out = d / f"{name}{suffix}"
        out.write_bytes(data() if callable(data) else data)
        return out
    return build


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_header_claiming(shape: tuple) -> bytes:
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 16


def _zip(members: dict[str, bytes], corrupt: bool = False) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    raw = bytearray(buf.getvalue())
    if corrupt:  # damage the compressed stream, keep the zip structure
        for i in range(40, 60):
            raw[i] ^= 0x5A
    return bytes(raw)


def _half(b: bytes) -> bytes:
    return b[: len(b) // 2]


def _head(b: bytes) -> bytes:
    return b[:12]


def _wrong_magic(b: bytes) -> bytes:
    return b"GARBAGE!" + b[8:]


def _empty(b: bytes) -> bytes:
    return b""


def _bitflip_body(b: bytes) -> bytes:
    a = bytearray(b)
    for i in range(len(a) // 3, len(a) // 3 + 64):
        a[i] ^= 0xFF
    return bytes(a)


TRUNCATION = {"half": _half, "header-only": _head}
DAMAGE = {**TRUNCATION, "wrong-magic": _wrong_magic, "empty": _empty}


def depth_cases(fixtures: Path) -> list[Case]:
    cases = []
    for rel, (enc, params) in REAL_DEPTH.items():
        for how, fn in DAMAGE.items():
            name = f"{enc}-{how}"
            cases.append(Case(f"depth/{name}", _copy_from(fixtures, rel, fn, name),
                              lambda p, e=enc, kw=params: read_depth(p, e, **kw), FormatError,
                              "truncated|corrupt|wrong magic|not a|empty|cannot|malformed|size",
                              ("inspect", "--encoding", enc, *_cli_params(params))))
    for enc, params in SYNTH_DEPTH.items():
        damage = dict(DAMAGE)
        if enc == "eth3d-raw":  # headerless: only its size can be wrong
            damage = {"half": _half, "plus-bytes": lambda b: b + b"\x00" * 5, "empty": _empty}
        for how, fn in damage.items():
            name = f"{enc}-{how}"
            cases.append(Case(f"depth/{name}", _write_synth(enc, params, fn, name),
                              lambda p, e=enc, kw=params: read_depth(p, e, **kw), FormatError,
                              "truncated|corrupt|wrong magic|not a|empty|cannot|malformed|size|HDF5|EXR",
                              ("inspect", "--encoding", enc, *_cli_params(params))))
    return cases


def _cli_params(params: dict) -> tuple:
    out: list[str] = []
    for k, v in params.items():
        out += [f"--{k}", str(v)]
    return tuple(out)


def content_cases() -> list[Case]:
    """Well-formed files whose content is not depth: NaN, inf, negative, zero-size, huge headers."""
    nan = np.full((8, 8), np.nan, np.float32)
    minus_inf = _ramp(8, 8)
    minus_inf[2, 3] = -np.inf
    neg = -_ramp(8, 8)
    cases = []
    for enc in ("pfm", "npy", "dpt", "exr"):
        # (+inf is the writers' own invalid marker: an all-+inf map is all invalid, like an all-zero PNG)
        for what, arr, match in (("nan", nan, "NaN"), ("minus-inf", minus_inf, "negative"),
                                 ("negative", neg, "negative")):
            suffix = "." + enc

            def build(d, arr=arr, enc=enc, what=what, suffix=suffix):
                p = d / f"{enc}-{what}{suffix}"
                data = {"pfm": C.encode_pfm, "npy": C.encode_npy, "dpt": C.encode_dpt}.get(enc)
                if data is not None:
                    p.write_bytes(data(arr))
                else:
                    C.write_exr_file(p, arr)
                return p
            cases.append(Case(f"content/{enc}-{what}", build, lambda p, e=enc: read_depth(p, e), FormatError, match,
                              ("inspect", "--encoding", enc)))
    huge = [
        ("pfm-huge", b"Pf\n100000000 100000000\n-1.0\n" + b"\x00" * 64, ".pfm", "pfm"),
        ("pgm-huge", b"P5\n100000 100000\n65535\n" + b"\x00" * 64, ".pgm", "pgm-mm"),
        ("dpt-huge", C.DPT_MAGIC + struct.pack("<ii", 10**9, 10**9) + b"\x00" * 64, ".dpt", "dpt"),
        ("png-huge", png_with_size(100000, 100000), ".png", "png-mm"),
        ("npy-huge", _npy_header_claiming((10**6, 10**6)), ".npy", "npy"),
        ("npz-huge", lambda: _zip({"depth.npy": _npy_header_claiming((10**6, 10**6))}), ".npz", "npz"),
        ("npz-corrupt-deflate", lambda: _zip({"depth.npy": _npy_bytes(_ramp())}, corrupt=True), ".npz", "npz"),
        ("pfm-zero-width", b"Pf\n0 10\n-1.0\n", ".pfm", "pfm"),
        ("pfm-negative-size", b"Pf\n-5 10\n-1.0\n" + b"\x00" * 200, ".pfm", "pfm"),
        ("pgm-zero", b"P5\n0 0\n65535\n", ".pgm", "pgm-mm"),
        ("npy-zero-size", _npy_bytes(np.zeros((0, 5), np.float32)), ".npy", "npy"),
        ("npy-1d", _npy_bytes(np.ones(7, np.float32)), ".npy", "npy"),
        ("npy-complex", _npy_bytes(np.ones((4, 4), np.complex64)), ".npy", "npy"),
        ("npy-strings", _npy_bytes(np.array([["a", "b"]])), ".npy", "npy"),
        ("pfm-bad-scale", b"Pf\n2 2\nnan\n" + b"\x00" * 16, ".pfm", "pfm"),
        ("pgm-8bit", b"P5\n2 2\n255\n" + b"\x00" * 4, ".pgm", "pgm-mm"),
        ("png-8bit-as-depth", None, ".png", "png-mm"),
    ]
    for name, data, suffix, enc in huge:
        if data is None:
            def data():
                buf = io.BytesIO()
                from PIL import Image
                Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG")
                return buf.getvalue()
        cases.append(Case(f"content/{name}", _raw(data, suffix, name), lambda p, e=enc: read_depth(p, e),
                          FormatError, "exceeds the limit|invalid size|empty|shape|must be|truncated|scale|8-bit|"
                          "bit|dtype|2-D|zero|degenerate|channels|not a|corrupt", ("inspect", "--encoding", enc)))
    return cases


def image_cases(fixtures: Path) -> list[Case]:
    cases = []
    for rel in REAL_IMAGES:
        stem = Path(rel).suffix.lstrip(".")
        for how, fn in {**DAMAGE, "bitflip": _bitflip_body}.items():
            if how == "bitflip" and stem != "png":
                continue  # JPEG / PPM have no checksum: flipped bits decode to other pixels
            name = f"img-{stem}-{how}"
            cases.append(Case(f"image/{name}", _copy_from(fixtures, rel, fn, name), read_image, FormatError,
                              "truncated|corrupt|not an image|cannot|empty|identify|wrong|broken|CRC|decode",
                              ("inspect",)))
    cases.append(Case("image/png-bomb", _raw(png_with_size(200000, 200000, 8, 2), ".png", "img-bomb"), read_image,
                      FormatError, "exceeds the limit|bomb", ("inspect",)))
    cases.append(Case("image/not-an-image", _raw(b"hello world, not pixels\n" * 4, ".jpg", "img-text"), read_image,
                      FormatError, "not an image|cannot|identify|wrong", ("inspect",)))
    return cases


# ------------------------------------------------------------------------------------- shards


def tar_bytes(members: list[tuple[str, bytes, bytes, str, int | None]]) -> bytes:
    """(name, data, type, linkname, declared size or None) -> tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, kind, link, _declared in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    raw = bytearray(buf.getvalue())
    # patch declared sizes (a member larger than the data that follows it)
    off = 0
    for name, data, kind, link, declared in members:
        if declared is not None:
            raw[off + 124: off + 136] = f"{declared:011o}\x00".encode()
            chk = sum(raw[off: off + 148]) + 8 * 32 + sum(raw[off + 156: off + 512])
            raw[off + 148: off + 156] = f"{chk:06o}\x00 ".encode()
            return bytes(raw[: off + 512 + len(data)])  # cut right after this member's real data
        off += 512 + (len(data) + 511) // 512 * 512 if kind == tarfile.REGTYPE else 512
    return bytes(raw)


REG = tarfile.REGTYPE
_J = json.dumps({"i": 1}).encode()
SHARDS = {
    "traversal": ([("../evil.x.txt", b"x", REG, "", None)], r"'\.\.'"),
    "traversal-deep": ([("k.a.txt", b"1", REG, "", None), ("a/../../evil.x.txt", b"x", REG, "", None)], r"'\.\.'"),
    "absolute": ([("/tmp/evil.x.txt", b"x", REG, "", None)], "absolute"),
    "symlink": ([("k.x.txt", b"", tarfile.SYMTYPE, "/etc/passwd", None)], "symlink"),
    "hardlink": ([("k.x.txt", b"", tarfile.LNKTYPE, "/etc/passwd", None)], "hard link"),
    "directory": ([("k", b"", tarfile.DIRTYPE, "", None)], "directory"),
    "fifo": ([("k.x.txt", b"", tarfile.FIFOTYPE, "", None)], "fifo"),
    "nested": ([("sub/k.x.txt", b"x", REG, "", None)], "flat"),
    "not-key-field-ext": ([("noext", b"x", REG, "", None)], "key.field.ext"),
    "duplicate-key": ([("a.x.json", _J, REG, "", None), ("b.x.json", _J, REG, "", None),
                       ("a.y.json", _J, REG, "", None)], "appears twice"),
    "duplicate-field": ([("a.x.json", _J, REG, "", None), ("a.x.txt", b"t", REG, "", None)], "appears twice"),
    "member-larger-than-declared": ([("a.x.bin", b"0123456789" * 10, REG, "", 5000)], "unreadable|truncated"),
    "bad-json": ([("a.x.json", b"{not json", REG, "", None)], "cannot decode"),
    "bad-npy": ([("a.x.npy", b"\x93NUMPY\x01\x00garbage", REG, "", None)], "cannot decode"),
    "bad-png": ([("a.x.png", C.PNG_MAGIC + b"\x00" * 30, REG, "", None)], "cannot decode"),
    "png-bomb": ([("a.x.png", png_with_size(100000, 100000, 8, 2), REG, "", None)], "cannot decode"),
    "unknown-ext": ([("a.x.pickle", b"\x80\x04K\x01.", REG, "", None)], "unknown member extension"),
    "not-a-tar": (None, "unreadable|not a tar"),
    "truncated": ("truncated", "unreadable|truncated"),
}


def shard_cases() -> list[Case]:
    from bridgedepth.data.shards import ShardError, iter_shard

    def build_for(name, members):
        def build(d: Path) -> Path:
            p = d / f"shard-{name}.tar"
            if members is None:
                p.write_bytes(b"this is not a tar archive at all\n" * 40)
            elif members == "truncated":
                good = tar_bytes([("a.x.bin", b"z" * 3000, REG, "", None), ("b.x.bin", b"y" * 3000, REG, "", None)])
                p.write_bytes(good[:4000])
            else:
                p.write_bytes(tar_bytes(members))
            return p
        return build

    return [Case(f"shard/{name}", build_for(name, members), lambda p: list(iter_shard(p)), ShardError, match)
            for name, (members, match) in SHARDS.items()]


def dataset_cases() -> list[Case]:
    """Whole dataset folders: bad manifest, checksum mismatch."""
    from bridgedepth.data.shards import ShardError, iter_samples, write_dataset
    from bridgedepth.errors import InputError

    def ds(d: Path, name: str) -> Path:
        out = d / name
        write_dataset(out, 2, lambda i: {"x": i}, samples_per_shard=1, progress=False)
        return out

    def bad_manifest(d):
        out = ds(d, "ds-bad-manifest")
        (out / "manifest.json").write_text("{ not json")
        return out

    def foreign_manifest(d):
        out = ds(d, "ds-foreign-manifest")
        (out / "manifest.json").write_text(json.dumps({"format": "something-else"}))
        return out

    def checksum(d):
        out = ds(d, "ds-checksum")
        p = out / "shard-000000.tar"
        p.write_bytes(_bitflip_body(p.read_bytes()))
        return out

    def missing_shard(d):
        out = ds(d, "ds-missing")
        (out / "shard-000001.tar").unlink()
        return out

    def bad_status(d):
        out = ds(d, "ds-bad-status")
        (out / "shard-000000.tar.json").write_text("[1, 2")
        return out

    read = lambda p: list(iter_samples(p))  # noqa: E731
    return [
        Case("dataset/bad-manifest-json", bad_manifest, read, ShardError, "unreadable manifest", ("shards", "verify")),
        Case("dataset/foreign-manifest", foreign_manifest, read, ShardError, "not a bridgedepth-shards manifest",
             ("shards", "verify")),
        Case("dataset/checksum-mismatch", checksum, read, ShardError, "checksum mismatch", ("shards", "verify")),
        Case("dataset/missing-shard", missing_shard, read, ShardError, "incomplete shard", ("shards", "verify")),
        Case("dataset/bad-status-json", bad_status, read, ShardError, "incomplete shard", ("shards", "verify")),
        Case("dataset/not-a-dataset", lambda d: (d / "empty-dir").mkdir() or d / "empty-dir", read, InputError,
             "not a shard dataset", ("shards", "verify")),
    ]


# ------------------------------------------------------------------------------------- configs


def config_cases() -> list[Case]:
    from bridgedepth.config import ConfigError, load_config

    texts = {
        "yaml-syntax": ("seed: [1, 2\n", "not valid YAML"),
        "yaml-tabs": ("train:\n\tlr: 1\n", "not valid YAML"),
        "yaml-list-top": ("- 1\n- 2\n", "mapping at the top level"),
        "yaml-scalar-top": ("42\n", "mapping at the top level"),
        "unknown-key": ("base: tiny\ntrian:\n  lr: 1e-4\n", "trian"),
        "unknown-nested-key": ("base: tiny\ntrain:\n  lrr: 1e-4\n", "lrr"),
        "wrong-type": ("base: tiny\ntrain:\n  steps: many\n", "steps"),
        "section-not-mapping": ("base: tiny\ntrain: 5\n", "train"),
        "python-tag": ("seed: !!python/object/apply:os.getcwd []\n", "not valid YAML"),
        "binary-garbage": (b"\xff\xfe\x00\x81garbage", "not valid|UTF-8|decode|YAML"),
        "unknown-base": ("base: no-such-preset\n", "no-such-preset|not found"),
        "circular-base": (None, "circular"),
    }

    def build_for(name, text):
        def build(d: Path) -> Path:
            p = d / f"cfg-{name}.yaml"
            if text is None:
                p.write_text(f"base: cfg-{name}.yaml\n")
            elif isinstance(text, bytes):
                p.write_bytes(text)
            else:
                p.write_text(text)
            return p
        return build

    return [Case(f"config/{name}", build_for(name, text), lambda p: load_config(p), ConfigError, match,
                 ("config", "show"))
            for name, (text, match) in texts.items()]


def checkpoint_cases() -> list[Case]:
    """Checkpoint folders with missing, truncated or mismatched tensors (or config)."""
    from safetensors.torch import load_file, save_file

    from bridgedepth.errors import InputError
    from bridgedepth.mde import build_model, load_model, save_model

    def base(d: Path, name: str) -> Path:
        out = d / name
        save_model(build_model("micro", seed=0), out)
        return out

    def edit_weights(name, fn):
        def build(d):
            out = base(d, name)
            f = out / "model.safetensors"
            sd = load_file(str(f))
            save_file(fn(sd), str(f))
            return out
        return build

    def drop_tensor(sd):
        sd.pop(sorted(sd)[0])
        return sd

    def reshape_tensor(sd):
        k = next(k for k in sorted(sd) if sd[k].ndim == 2)
        sd[k] = sd[k][:, :-1].contiguous()
        return sd

    def extra_tensor(sd):
        import torch
        sd["not.a.parameter"] = torch.zeros(3)
        return sd

    def truncated(d):
        out = base(d, "ckpt-truncated")
        f = out / "model.safetensors"
        f.write_bytes(f.read_bytes()[:1000])
        return out

    def no_weights(d):
        out = base(d, "ckpt-no-weights")
        (out / "model.safetensors").unlink()
        return out

    def bad_config(d):
        out = base(d, "ckpt-bad-config")
        (out / "config.json").write_text("{ nope")
        return out

    def mismatched_config(d):
        out = base(d, "ckpt-mismatched-config")
        cfg = json.loads((out / "config.json").read_text())
        cfg["backbone_config"]["hidden_size"] = 2 * cfg["backbone_config"]["hidden_size"]
        (out / "config.json").write_text(json.dumps(cfg))
        return out

    def garbage_weights(d):
        out = base(d, "ckpt-garbage-weights")
        (out / "model.safetensors").write_bytes(b"\xff" * 64)
        return out

    def scale_head(name, fn):
        def build(d):
            import torch

            from bridgedepth.mde.model import ScaleHead

            out = base(d, name)
            save_model(build_model("micro", seed=0), out, scale_head=ScaleHead(32, hidden=8, max_depth=10.0))
            f = out / "scale_head.safetensors"
            f.write_bytes(fn(f.read_bytes())) if fn is not None else save_file({"w": torch.zeros(2)}, str(f))
            return f
        return build

    from bridgedepth.mde.model import load_scale_head

    read = lambda p: load_model(p)  # noqa: E731
    cli = ("eval", "--dataset", "folder", "--encoding", "png-mm", "--model")
    heads = [
        Case("checkpoint/scale-head-truncated", scale_head("ckpt-head-truncated", _half),
             lambda f: load_scale_head(f.parent), InputError, "cannot load the scale head"),
        Case("checkpoint/scale-head-wrong-tensors", scale_head("ckpt-head-wrong", None),
             lambda f: load_scale_head(f.parent), InputError, "cannot load the scale head.*(Missing|Unexpected)"),
    ]
    return [
        Case("checkpoint/missing-tensor", edit_weights("ckpt-missing-tensor", drop_tensor), read, InputError,
             "missing|weights do not fit|cannot load", cli),
        Case("checkpoint/mismatched-shape", edit_weights("ckpt-mismatched-shape", reshape_tensor), read, InputError,
             "size mismatch|shape|cannot load", cli),
        Case("checkpoint/unexpected-tensor", edit_weights("ckpt-unexpected-tensor", extra_tensor), read, InputError,
             "unexpected|not.a.parameter|cannot load", cli),
        Case("checkpoint/truncated-safetensors", truncated, read, InputError, "cannot load|safetensors|header", cli),
        Case("checkpoint/no-weights", no_weights, read, InputError, "no model.safetensors", cli),
        Case("checkpoint/bad-config-json", bad_config, read, InputError, "config|JSON|cannot load", cli),
        Case("checkpoint/mismatched-config", mismatched_config, read, InputError, "size mismatch|shape|cannot load",
             cli),
        Case("checkpoint/garbage-weights", garbage_weights, read, InputError, "cannot load|safetensors|header", cli),
        *heads,
    ]


def all_cases(fixtures: Path) -> list[Case]:
    return (depth_cases(fixtures) + content_cases() + image_cases(fixtures) + shard_cases() + dataset_cases()
            + config_cases() + checkpoint_cases())
