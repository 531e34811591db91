"""Named depth-model architectures (DINOv2 encoder + DPT head), as data.

``vits`` / ``vitb`` / ``vitl`` / ``vitg`` are exactly Depth-Anything-V2's configurations: DINOv2 ViT-S/B/L/G
with patch 14 and a 37x37 position-embedding grid (518 px), layer scale, the DPT head's ``features`` and
``out_channels``, and the four transformer blocks whose outputs feed the head (0-based block indices, as
Depth-Anything-V2's ``intermediate_layer_idx``). ViT-G uses the fused SwiGLU feed-forward.

``tiny``, ``toy`` and ``micro`` are ours: ``tiny`` is the old embedded CPU default (patch 14: only a 9x9 to
10x10 token grid at ~140 px); ``toy`` is the shipped toy foundation depth model (patch 8 at 128 px: a
16x16 token grid, 1.3 M parameters; see docs/zoo.md); ``micro`` exists for unit tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError


@dataclass(frozen=True)
class ArchSpec:
    """One architecture. ``tapped_blocks`` are 0-based transformer block indices."""

    hidden_size: int
    num_layers: int
    num_heads: int
    features: int  # DPT fusion width
    out_channels: tuple[int, int, int, int]  # DPT reassemble widths
    tapped_blocks: tuple[int, int, int, int]
    swiglu: bool = False
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 518  # position-embedding grid = image_size // patch_size per side
    head_hidden_size: int = 32

    def as_dict(self) -> dict:
        return asdict(self)


ARCHS: dict[str, ArchSpec] = {
    # DINOv2 ViT-S/14: 384 wide, 12 blocks, 6 heads.
    "vits": ArchSpec(384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    # DINOv2 ViT-B/14: 768 wide, 12 blocks, 12 heads.
    "vitb": ArchSpec(768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    # DINOv2 ViT-L/14: 1024 wide, 24 blocks, 16 heads.
    "vitl": ArchSpec(1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
    # DINOv2 ViT-g/14 ("giant2"): 1536 wide, 40 blocks, 24 heads, fused SwiGLU FFN.
    "vitg": ArchSpec(1536, 40, 24, 384, (1536, 1536, 1536, 1536), (9, 19, 29, 39), swiglu=True),
    # Embedded CPU default: ~3 M parameters, native grid 10x10 at 140 px.
    "tiny": ArchSpec(192, 6, 3, 64, (48, 96, 192, 192), (1, 2, 4, 5), image_size=140),
    # The shipped toy foundation (bridgedepth.zoo): patch 8, 16x16 tokens at 128 px, ~1.3 M parameters.
    "toy": ArchSpec(128, 4, 2, 32, (32, 64, 128, 128), (0, 1, 2, 3), patch_size=8, image_size=128,
                    head_hidden_size=16),
    # Unit tests: a few thousand parameters, native grid 4x4 at 56 px.
    "micro": ArchSpec(32, 4, 2, 16, (8, 16, 32, 32), (0, 1, 2, 3), image_size=56, head_hidden_size=8),
}


def model_names() -> list[str]:
    return list(ARCHS)


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHS[name]
    except KeyError:
        raise InputError(f"unknown model '{name}'; available: {', '.join(ARCHS)}") from None
