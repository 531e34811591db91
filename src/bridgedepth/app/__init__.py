"""`bridge app`: a Gradio web page for the depth model (optional extra: ``pip install 'bridgedepth[app]'``).

Upload an image (or pick an example from the shared fixtures), see the input and its colourised depth
side by side, and download the 16-bit PNG, the ``.npy`` and, for metric depth, a ``.ply`` point cloud.
The page states what the values are (relative disparity or metres). The work is in
:mod:`bridgedepth.app.core` (no Gradio); this module is the page.

Safety: binds 127.0.0.1 unless told otherwise; uploads over ``max_upload_mb``, non-images (checked by
content) and images over ``max_pixels`` are refused with a message; one request at a time with a short
queue (bounded memory); everything is written under one temporary workspace folder (Gradio's upload
cache included), removed when the app stops.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .core import DEFAULT_FOV, MAX_PIXELS, MAX_UPLOAD_BYTES, DepthApp, UploadRefused, find_examples

__all__ = ["DepthApp", "UploadRefused", "build_page", "find_examples", "launch", "make_app"]

log = logging.getLogger(__name__)

MODE_LABELS = {"relative": "relative disparity", "metric": "metric depth (m)"}


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        from ..errors import InputError

        raise InputError("the web app needs Gradio: pip install 'bridgedepth[app]'") from None
    return gr


def make_app(model=None, *, workspace=None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
             max_pixels: int = MAX_PIXELS, fov: float = DEFAULT_FOV) -> DepthApp:
    """A :class:`DepthApp` for a checkpoint directory (default: the shipped toy depth model); a metric
    mode is offered when the checkpoint has a metric head or a scale head."""
    from ..mde.model import read_metadata
    from ..mde.predictor import Predictor

    if model is None:
        from ..zoo import model_path

        model = model_path("depth")
    pred = Predictor.from_pretrained(model)
    metric = None
    if pred.kind != "depth" and "scale_head" in read_metadata(model):
        metric = Predictor.from_pretrained(model, metric=True)
    return DepthApp(pred, str(model), metric_predictor=metric, workspace=workspace,
                    max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, fov=fov)


def build_page(app: DepthApp, examples=()):
    """The Gradio Blocks page for ``app``."""
    gr = _import_gradio()

    modes = app.modes

    def predict(file, mode_label, fov):
        hidden = gr.update(visible=False, value=None)
        if file is None:
            return None, None, "Upload an image or pick an example.", hidden, hidden, hidden
        mode = next((k for k, v in MODE_LABELS.items() if v == mode_label), modes[0])
        try:
            r = app.run(file, mode, fov)
        except UploadRefused as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # never a stack trace on the page; the log has it
            log.exception("prediction failed")
            raise gr.Error(f"prediction failed ({type(e).__name__}); see the server log", print_exception=False) from None
        ply = r.files.get("ply")
        return (r.rgb, r.color, r.summary,
                gr.update(value=str(r.files["png16"]), visible=True),
                gr.update(value=str(r.files["npy"]), visible=True),
                gr.update(value=str(ply), visible=True) if ply else hidden)

    with gr.Blocks(title="bridgedepth", analytics_enabled=False) as page:
        gr.Markdown(f"## bridgedepth: monocular depth\nModel: `{app.model_desc}`. "
                    f"Upload a PNG/JPEG/BMP/TIFF/WebP image (at most {app.max_upload_bytes / 2**20:.0f} MB, "
                    f"{app.max_pixels / 1e6:.1f} megapixels).")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                mode = gr.Radio([MODE_LABELS[m] for m in modes], value=MODE_LABELS[modes[0]], label="Output",
                                visible=len(modes) > 1, elem_id="mode")
                fov = gr.Slider(20, 120, value=app.fov, step=1, label="Horizontal field of view (°) for the point cloud",
                                visible="metric" in modes, elem_id="fov")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Examples (shared fixtures)")
            with gr.Column(scale=2):
                with gr.Row():
                    shown_in = gr.Image(label="Input", type="numpy", format="png", interactive=False, height=340,
                                        elem_id="input-image")
                    shown_depth = gr.Image(label="Depth (colourised: near = red, far = blue)", type="numpy",
                                           format="png", interactive=False, height=340, elem_id="depth-image")
                info = gr.Markdown("Upload an image or pick an example.", elem_id="info")
                with gr.Row():
                    dl_png = gr.DownloadButton("16-bit PNG", visible=False, elem_id="download-png16")
                    dl_npy = gr.DownloadButton(".npy (float32)", visible=False, elem_id="download-npy")
                    dl_ply = gr.DownloadButton(".ply point cloud", visible=False, elem_id="download-ply")
        outs = [shown_in, shown_depth, info, dl_png, dl_npy, dl_ply]
        upload.change(predict, [upload, mode, fov], outs)
        mode.change(predict, [upload, mode, fov], outs)
    return page


def launch(model=None, *, host: str = "127.0.0.1", port: int = 7860, examples=None, block: bool = True,
           max_upload_mb: float = MAX_UPLOAD_BYTES / 2**20, max_pixels: int = MAX_PIXELS, fov: float = DEFAULT_FOV):
    """Start the app; ``block=False`` returns ``(page, app)`` with the server running in a thread."""
    app = make_app(model, max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, fov=fov)
    # Gradio's upload cache goes inside the workspace too (read when components are created)
    os.environ["GRADIO_TEMP_DIR"] = str(app.workspace / "gradio")
    gr = _import_gradio()
    ex = find_examples() if examples is None else [Path(p) for p in examples]
    page = build_page(app, ex)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    page.queue(default_concurrency_limit=1, max_size=16)
    try:
        page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True,
                    max_file_size=int(max_upload_mb * 2**20), footer_links=[], theme=theme, quiet=True,
                    allowed_paths=[str(app.workspace)], prevent_thread_lock=not block, ssr_mode=False)
    except BaseException:
        app.close()
        raise
    if block:
        app.close()
        return None
    return page, app
