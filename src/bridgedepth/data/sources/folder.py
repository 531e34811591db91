"""``folder``: any dataset laid out as a folder of RGB images beside a folder of depth files.

Files pair by identical relative stem, else by the digit groups in their names
(``rgb_00050.jpg`` with ``sync_depth_00050.png``), else by an explicit list file (see
:mod:`.pairing`); ambiguity is an error. The depth encoding is named (``--encoding``, any
``bridgedepth.io`` encoding, e.g. ``png-mm``, ``png-kitti``, ``png-cm``, ``npy``, ``pfm``) or detected
from the file's magic bytes. Intrinsics are optional: ``fx,fy,cx,cy``, or a JSON/text file
(Open3D ``intrinsic_matrix``, ``fx/fy/cx/cy`` keys, ``cam_in``, a per-file annotation list
``{"files": [{"rgb": ..., "cam_in": [...]}, ...]}``, or a text file with 4 numbers or a 3x3 K).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ...errors import InputError
from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .pairing import pair_files_report
from .readers import read_depth_file, read_rgb
from .registry import register

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _parse_numbers(text: str) -> list[float] | None:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if parts and all(re.fullmatch(_NUM, p) for p in parts):
        return [float(p) for p in parts]
    return None


def _from_numbers(vals: list[float], where: str) -> tuple[float, float, float, float]:
    if len(vals) == 4:
        return vals[0], vals[1], vals[2], vals[3]
    if len(vals) == 9:  # 3x3 K, row-major
        return vals[0], vals[4], vals[2], vals[5]
    raise InputError(f"{where}: expected 4 numbers (fx fy cx cy) or a 3x3 matrix, got {len(vals)} numbers")


class Intrinsics:
    """A global pinhole (fx, fy, cx, cy) and/or a per-image table keyed by RGB file name."""

    def __init__(self, spec: str | None, root: Path):
        self.fixed: tuple[float, ...] | None = None
        self.per_file: dict[str, tuple[float, ...]] = {}
        self.source = spec
        if spec is None or spec == "":
            return
        nums = _parse_numbers(str(spec))
        if nums is not None:
            self.fixed = _from_numbers(nums, "intrinsics")
            return
        path = Path(spec)
        if not path.is_absolute() and not path.exists():
            path = root / path
        if not path.is_file():
            raise InputError(f"{spec}: intrinsics must be 'fx,fy,cx,cy' or an existing file")
        text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            nums = _parse_numbers(text)
            if nums is None:
                raise InputError(f"{path}: neither JSON nor a list of numbers") from None
            self.fixed = _from_numbers(nums, str(path))
            return
        self._from_json(data, path)

    def _from_json(self, data: Any, path: Path) -> None:
        if isinstance(data, dict) and "intrinsic_matrix" in data:  # Open3D: 3x3 stored column-major
            m = [float(v) for v in data["intrinsic_matrix"]]
            if len(m) != 9:
                raise InputError(f"{path}: intrinsic_matrix must have 9 numbers")
            self.fixed = (m[0], m[4], m[6], m[7])
        elif isinstance(data, dict) and all(k in data for k in ("fx", "fy", "cx", "cy")):
            self.fixed = tuple(float(data[k]) for k in ("fx", "fy", "cx", "cy"))
        elif isinstance(data, dict) and "cam_in" in data:
            self.fixed = _from_numbers([float(v) for v in data["cam_in"]], str(path))
        elif isinstance(data, dict) and isinstance(data.get("files"), list):
            for item in data["files"]:
                if isinstance(item, dict) and "rgb" in item and "cam_in" in item:
                    self.per_file[Path(item["rgb"]).name] = _from_numbers(
                        [float(v) for v in item["cam_in"]], str(path)
                    )
            if not self.per_file:
                raise InputError(f"{path}: 'files' entries need 'rgb' and 'cam_in'")
        else:
            raise InputError(
                f"{path}: unrecognised intrinsics JSON (expected intrinsic_matrix, fx/fy/cx/cy, cam_in or files)"
            )

    def lookup(self, rgb_path: Path) -> tuple[float, ...] | None:
        if rgb_path.name in self.per_file:
            return self.per_file[rgb_path.name]
        return self.fixed


@register
class FolderAdapter(SourceAdapter):
    name = "folder"
    description = "any rgb/ + depth/ folder pair (folder names configurable) with a named depth encoding"
    layout = """\
ROOT/rgb/<any/sub/path>/NAME.(png|jpg|...)     RGB images
ROOT/depth/<any/sub/path>/NAME.<ext>           depth in the encoding given by --encoding
pairing: identical stem, else digit groups (rgb_00050.jpg ~ sync_depth_00050.png), else list_file
(other folder names: --opt rgb_dir=color --opt depth_dir=depth, e.g. Open3D/Redwood)"""
    encodings = ()  # any bridgedepth.io encoding
    options = {
        "rgb_dir": "RGB folder under ROOT (default rgb)",
        "depth_dir": "depth folder under ROOT (default depth)",
        "list_file": "text file of 'RGB DEPTH' lines (relative to the two folders) instead of name pairing",
        "intrinsics": "fx,fy,cx,cy or a JSON/text file (Open3D intrinsic_matrix, fx/fy/cx/cy, cam_in, files list)",
        "max_depth": "depths beyond this many metres are invalid (default: none)",
        "depth_params": "extra read_depth parameters as JSON, e.g. {\"scale\": 256}",
    }

    def __init__(self, root, encoding=None, **options):
        super().__init__(root, encoding=encoding, **options)
        from ...io import ENCODINGS

        if self.encoding is not None and self.encoding not in ENCODINGS:
            raise InputError(f"unknown depth encoding {self.encoding!r}; known: {', '.join(sorted(ENCODINGS))}")
        self.rgb_dir = self.root / self.opt("rgb_dir", "rgb")
        self.depth_dir = self.root / self.opt("depth_dir", "depth")
        lf = self.opt("list_file")
        self.list_file = None if lf is None else (Path(lf) if Path(lf).is_absolute() else self.root / lf)
        self.intr = Intrinsics(self.opt("intrinsics"), self.root)
        params = self.opt("depth_params", None)
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except json.JSONDecodeError as e:
                raise InputError(f"option depth_params={params!r} is not JSON: {e}") from e
        self.depth_params = dict(params or {})

    def index(self) -> list[SampleRef]:
        res = pair_files_report(self.rgb_dir, self.depth_dir, self.list_file, strict=False)
        refs = []

        def key_for(p: Path, base: Path) -> str:
            try:
                parts = p.relative_to(base).with_suffix("").parts
            except ValueError:
                parts = (p.stem,)
            return make_key(*parts)

        for r, d in res.pairs:
            refs.append(SampleRef(key_for(r, self.rgb_dir), {"rgb": r, "depth": d}))
        for r in res.unpaired_rgb:
            refs.append(SampleRef(key_for(r, self.rgb_dir), {"rgb": r}, {"unpaired": "rgb"}))
        for d in res.unpaired_depth:
            refs.append(SampleRef(key_for(d, self.depth_dir), {"depth": d}, {"unpaired": "depth"}))
        for line, p in res.missing:
            refs.append(SampleRef(make_key("missing", p.stem), {"missing": p}, {"list_line": line}))
        return refs

    def _encoding_for(self, path: Path) -> str:
        if self.encoding is not None:
            return self.encoding
        from ...io import detect_encoding

        enc = detect_encoding(path)
        if enc is None:
            raise SampleError(path, "cannot detect the depth encoding from the file; pass --encoding")
        return enc

    def load(self, ref: SampleRef) -> dict:
        if "missing" in ref.files:
            raise SampleError(ref.files["missing"], f"listed in {ref.info['list_line']} but does not exist")
        if ref.info.get("unpaired") == "rgb":
            raise SampleError(ref.files["rgb"], f"no depth file in {self.depth_dir} pairs with this image")
        if ref.info.get("unpaired") == "depth":
            raise SampleError(ref.files["depth"], f"no image in {self.rgb_dir} pairs with this depth file")
        ipath, dpath = ref.files["rgb"], ref.files["depth"]
        enc = self._encoding_for(dpath)
        depth, valid = read_depth_file(dpath, enc, **self.depth_params)
        rgb = read_rgb(ipath)
        check_same_size(rgb, depth, ipath, dpath)
        depth, valid = finalize_depth(depth, valid, self.opt("max_depth", None, float))
        sample = {"__key__": ref.key, "rgb": rgb, "depth": depth, "valid": valid,
                  "meta": self.base_meta(ref, encoding=enc)}
        k = self.intr.lookup(ipath)
        if k is not None:
            sample["intrinsics"] = intrinsics_array(*k)
        return sample

