"""The web app's work, without Gradio: check an upload, predict, write the downloads.

Everything the app writes goes under one workspace folder (a fresh temporary folder by default):
``results/<id>/`` per request (at most ``keep`` kept; older ones are deleted) and Gradio's own upload
cache (``gradio/``, through ``GRADIO_TEMP_DIR``). Uploads are checked before decoding: size on disk,
format (by content, not by name) and pixel count, so a huge or non-image upload is refused with a
message instead of being decoded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_PIXELS = 4096 * 4096
DEFAULT_FOV = 60.0


class UploadRefused(InputError):
    """An upload the app will not process (the message is shown to the user as it is)."""


@dataclass
class Result:
    rgb: np.ndarray
    color: np.ndarray
    kind: str
    summary: str
    files: dict[str, Path] = field(default_factory=dict)


class DepthApp:
    """``DepthApp(predictor, workspace=None)``: ``run(path, mode)`` -> :class:`Result`."""

    def __init__(self, predictor, model_desc: str, *, metric_predictor=None, workspace: str | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS, keep: int = 16,
                 fov: float = DEFAULT_FOV):
        self.predictor = predictor
        self.metric_predictor = metric_predictor
        self.model_desc = model_desc
        self.own_workspace = workspace is None
        self.workspace = Path(workspace or tempfile.mkdtemp(prefix="bridge-app-")).resolve()
        self.results = self.workspace / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes, self.max_pixels, self.keep, self.fov = max_upload_bytes, max_pixels, keep, fov
        self._lock = threading.Lock()

    @property
    def modes(self) -> list[str]:
        rel = "relative" if self.predictor.kind == "disparity" else "metric"
        return [rel] + (["metric"] if self.metric_predictor is not None and rel != "metric" else [])

    def check_upload(self, path) -> np.ndarray:
        """RGB uint8 of an uploaded file, or :class:`UploadRefused` with the reason."""
        from ..io import image_info, read_image

        if path is None:
            raise UploadRefused("no image: upload one or pick an example")
        p = Path(path)
        try:
            size = p.stat().st_size
        except OSError:
            raise UploadRefused("the upload did not arrive; try again") from None
        if size > self.max_upload_bytes:
            raise UploadRefused(f"{p.name}: {size / 2**20:.1f} MB is over the {self.max_upload_bytes / 2**20:.0f} MB "
                                "upload limit")
        try:
            info = image_info(p)
        except InputError as e:
            raise UploadRefused(f"{p.name}: not an image we can read ({_reason(e)})") from None
        h, w = info["shape"][:2]
        if h * w > self.max_pixels:
            raise UploadRefused(f"{p.name}: {w}x{h} pixels is over the app's limit of {self.max_pixels / 1e6:.1f} "
                                "megapixels; downscale it first")
        try:
            return read_image(p, orient=True)  # as the browser showed it (EXIF orientation)
        except InputError as e:
            raise UploadRefused(f"{p.name}: not an image we can read ({_reason(e)})") from None

    def _new_dir(self) -> Path:
        with self._lock:
            d = self.results / uuid.uuid4().hex[:12]
            d.mkdir()
            old = sorted((q for q in self.results.iterdir() if q.is_dir()), key=lambda q: q.stat().st_mtime)
            for q in old[: max(0, len(old) - self.keep)]:
                shutil.rmtree(q, ignore_errors=True)
        return d

    def run(self, path, mode: str | None = None, fov: float | None = None) -> Result:
        from ..io.pointcloud import Intrinsics, depth_to_ply
        from ..mde.predictor import describe_values

        rgb = self.check_upload(path)
        mode = mode or self.modes[0]
        if mode not in self.modes:
            raise UploadRefused(f"this model has no {mode} output (it offers: {', '.join(self.modes)})")
        pred = self.metric_predictor if (mode == "metric" and self.predictor.kind != "depth") else self.predictor
        res = pred.predict(rgb)
        vals = describe_values(res.kind)
        out = self._new_dir()
        stem = Path(str(path)).stem[:40] or "image"
        tag = "depth" if res.kind == "depth" else "disp"
        files = {"png16": out / f"{stem}_{tag}16.png", "npy": out / f"{stem}_{tag}.npy"}
        res.save(files["png16"], "png16")
        res.save(files["npy"], "npy")
        v = res.values[np.isfinite(res.values)]
        if res.kind == "depth":
            fov = float(fov or self.fov)
            h, w = res.values.shape
            intr = Intrinsics.resolve(w, h, fov=fov)
            files["ply"] = out / f"{stem}_points.ply"
            n = depth_to_ply(files["ply"], res.values, rgb, intr, [f"bridgedepth app, horizontal FOV {fov} deg"])
            rng = f"{float(v.min()):.2f} m (near) to {float(v.max()):.2f} m (far)"
            extra = f" Point cloud: {n} points, horizontal field of view {fov:g}° assumed, principal point at the centre."
        else:
            rng = f"{float(v.min()):.3g} (far) to {float(v.max()):.3g} (near), no unit"
            extra = " No point cloud: relative disparity has no scale (use a metric model)."
        summary = (f"**{vals['meaning']}**. Values {rng}. Colours: Spectral_r, near = red, far = blue. "
                   f"16-bit PNG: value = png / scale (scale in its `bridgedepth` text chunk); .npy: float32 "
                   f"values.{extra} Model: {self.model_desc}; {rgb.shape[1]}x{rgb.shape[0]} input.")
        return Result(rgb, res.colorize(), res.kind, summary, files)

    def close(self) -> None:
        if self.own_workspace:
            shutil.rmtree(self.workspace, ignore_errors=True)


def _reason(e: Exception) -> str:
    msg = str(e)
    return msg.split(": ", 1)[1] if ": " in msg else msg


def find_examples(root: str | os.PathLike | None = None, limit: int = 4) -> list[Path]:
    """A few RGB images from the shared fixtures (``../shared/data/rgbd``, or ``BRIDGE_SHARED_DATA``)."""
    cands = []
    if root is not None:
        cands.append(Path(root))
    env = os.environ.get("BRIDGE_SHARED_DATA")
    if env:
        cands.append(Path(env) / "rgbd")
    cands += [Path.cwd().parent / "shared" / "data" / "rgbd", Path.cwd() / ".." / "shared" / "data" / "rgbd"]
    for c in cands:
        if c.is_dir():
            pats = ["nyu_sync/rgb/*.jpg", "kitti_annotated/rgb/*.png", "open3d/color/*.jpg"]
            found = [sorted(c.glob(p))[:1] for p in pats]
            out = [q for f in found for q in f]
            out += [q for q in sorted(c.glob("open3d/color/*.jpg")) if q not in out]
            return out[:limit]
    return []
