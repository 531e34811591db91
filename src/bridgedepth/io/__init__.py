"""Depth and image formats: readers, writers, validation, units. A leaf: imports nothing else of
bridgedepth except errors.

>>> from bridgedepth.io import read_depth, write_depth
>>> dm = read_depth("depth.png", "png-mm")        # DepthMap(depth m float32, valid bool, encoding, path)
>>> write_depth("depth.pfm", dm.depth, "pfm", valid=dm.valid)

Encodings are listed in :data:`ENCODINGS` (see docs/formats.md).
"""

from .colorize import colorize
from .common import MAX_IMAGE_PIXELS, FormatError, atomic_path, atomic_write, usual_permissions
from .depth import (
    ENCODINGS,
    Codec,
    DepthMap,
    detect_encoding,
    encoding_names,
    get_codec,
    read_depth,
    read_middlebury_calib,
    writable_encodings,
    write_depth,
)
from .image import image_info, read_image, write_image
from .pointcloud import Intrinsics, backproject, depth_to_ply, write_ply

__all__ = [
    "ENCODINGS", "Codec", "DepthMap", "FormatError", "Intrinsics", "MAX_IMAGE_PIXELS", "atomic_path",
    "atomic_write", "usual_permissions", "backproject", "colorize", "depth_to_ply", "write_ply", "detect_encoding", "encoding_names", "get_codec", "image_info", "read_depth",
    "read_image", "read_middlebury_calib", "writable_encodings", "write_depth", "write_image",
]
