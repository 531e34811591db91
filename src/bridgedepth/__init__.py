"""bridgedepth: BRIDGE reward-tuned depth-to-image data generation and monocular depth estimation."""

__version__ = "0.1.0"


def load(ckpt_dir, **kwargs):
    """A depth predictor for a checkpoint directory: ``bridgedepth.load(DIR).predict(rgb) -> DepthResult``.

    Imported lazily (torch and transformers load only when this is called). See
    :class:`bridgedepth.mde.predictor.Predictor` for the keyword arguments, e.g.
    ``precision="fp32" | "bf16" | "int8"`` (docs/performance.md).
    """
    from .mde.predictor import load as _load

    return _load(ckpt_dir, **kwargs)
