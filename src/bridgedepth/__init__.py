"""bridgedepth: BRIDGE reward-tuned depth-to-image data generation and monocular depth estimation."""

__version__ = "0.1.0"
