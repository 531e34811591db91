"""Depth model: DINOv2 + DPT, scale head, losses, trainer, predictor (imports io, data)."""
