"""bridgedepth: BRIDGE reward-tuned depth-to-image data generation and monocular depth estimation."""

__version__ = "0.1.0"


def load(ckpt_dir=None, **kwargs):
    """A depth predictor for a checkpoint directory: ``bridgedepth.load(DIR).predict(rgb) -> DepthResult``.

    Without ``ckpt_dir`` the shipped toy depth model (``bridgedepth.zoo.model_path("depth")``, relative
    disparity) is used; when it is not installed the error says how to get one. A ``.onnx`` file runs
    through onnxruntime (:class:`bridgedepth.mde.export.OnnxPredictor`). Imported lazily (torch and
    transformers load only when this is called). See :class:`bridgedepth.mde.predictor.Predictor` for
    the keyword arguments, e.g. ``precision="fp32" | "bf16" | "int8"`` (docs/performance.md).
    """
    if ckpt_dir is None:
        from .zoo import model_path

        ckpt_dir = model_path("depth")
    if str(ckpt_dir).endswith(".onnx"):
        from .mde.export import OnnxPredictor

        if kwargs:
            raise TypeError(f"an ONNX model takes no options, got {sorted(kwargs)}")
        return OnnxPredictor(ckpt_dir)
    from .mde.predictor import load as _load

    return _load(ckpt_dir, **kwargs)
