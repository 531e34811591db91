"""Video files through OpenCV: RGB uint8 frames in, RGB uint8 frames out (``mp4v`` for .mp4/.mov,
``MJPG`` for .avi). Video only: OpenCV neither reads nor writes audio, so a clip's sound is not
carried over. Writers write to a temporary name and rename when the clip is complete."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .common import FormatError, InputError, atomic_path, check_file

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int  # as the container reports it (may be approximate; 0 = unknown)


def _open(path) -> "tuple":
    import cv2

    p = check_file(path, "video")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise FormatError(p, "cannot open as a video (unknown container or codec for OpenCV)")
    return p, cap


def video_info(path) -> VideoInfo:
    import cv2

    p, cap = _open(path)
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
        n = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        raise FormatError(p, "video has no decodable frames")
    return VideoInfo(p, w, h, fps if fps > 0 else 25.0, n)


def read_frames(path) -> Iterator[np.ndarray]:
    """Yield the frames of a video as RGB uint8 (H, W, 3)."""
    import cv2

    p, cap = _open(path)
    try:
        n = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            n += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if n == 0:
            raise FormatError(p, "video has no decodable frames")
    finally:
        cap.release()


@contextlib.contextmanager
def video_writer(path, fps: float, size: tuple[int, int]):
    """``with video_writer(out, fps, (width, height)) as write: write(rgb)`` — atomic: the file appears
    under ``path`` only when the block completes."""
    import cv2

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _FOURCC:
        raise InputError(f"{target}: cannot write video with suffix '{target.suffix}' "
                         f"(use {', '.join(sorted(_FOURCC))})")
    w, h = int(size[0]), int(size[1])
    with atomic_path(target) as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*_FOURCC[suffix]), float(fps), (w, h))
        if not vw.isOpened():
            raise InputError(f"{target}: OpenCV cannot open a {_FOURCC[suffix]} video writer")

        def write(rgb: np.ndarray) -> None:
            if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
                raise InputError(f"{target}: frame {rgb.dtype} {rgb.shape} is not uint8 ({h}, {w}, 3)")
            vw.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

        try:
            yield write
        finally:
            vw.release()
        if os.path.getsize(tmp) == 0:
            raise InputError(f"{target}: the video writer produced an empty file")
