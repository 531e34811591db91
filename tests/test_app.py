"""`bridge app`: the upload checks and downloads (no browser), and an end-to-end run in a real headless
Chromium (Debian's `chromium`; Playwright drives it, no browser download)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest


REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("BRIDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 160x120 fixture: the NYUv2 sample when ../shared/data is there, otherwise a synthetic picture."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photo")
    shared = Path(os.environ.get("BRIDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    src = shared / "rgbd" / "nyu_sync" / "rgb" / "rgb_00000.jpg"
    if src.is_file():
        im = Image.open(src).convert("RGB").resize((160, 120))
    else:
        yy, xx = np.mgrid[0:120, 0:160]
        im = Image.fromarray(np.stack([xx * 1.5, yy * 2, (xx + yy) % 255], -1).astype(np.uint8))
    im.save(d / "room.png")
    return d / "room.png"


def test_core_checks_uploads_and_writes_only_in_its_workspace(micro_ckpt, photo, tmp_path):
    pytest.importorskip("gradio")
    from bridgedepth.app import UploadRefused, make_app
    from bridgedepth.mde.predictor import read_png16

    app = make_app(micro_ckpt, max_upload_bytes=200_000, max_pixels=200 * 200)
    try:
        assert app.modes == ["relative", "metric"]
        r = app.run(photo)
        assert r.kind == "disparity" and r.color.shape == (120, 160, 3)
        assert "relative disparity" in r.summary and set(r.files) == {"png16", "npy"}
        v, meta = read_png16(r.files["png16"])
        assert v.shape == (120, 160) and meta["unit"] == "relative"
        m = app.run(photo, "metric", 70)
        assert m.kind == "depth" and "metres" in m.summary and m.files["ply"].stat().st_size > 0
        for f in [*r.files.values(), *m.files.values()]:
            assert app.workspace in f.resolve().parents
        (tmp_path / "notes.png").write_text("hello, not an image")
        with pytest.raises(UploadRefused, match="not an image"):
            app.run(tmp_path / "notes.png")
        (tmp_path / "big.bin").write_bytes(b"\0" * 300_000)
        with pytest.raises(UploadRefused, match="upload limit"):
            app.run(tmp_path / "big.bin")
        from PIL import Image

        Image.new("RGB", (400, 300)).save(tmp_path / "wide.png")
        with pytest.raises(UploadRefused, match="megapixels"):
            app.run(tmp_path / "wide.png")
        with pytest.raises(UploadRefused, match="no image"):
            app.run(None)
        sideways = Image.open(photo)  # a phone photo stored sideways: shown (and predicted) upright
        exif = sideways.getexif()
        exif[0x0112] = 6
        sideways.save(tmp_path / "phone.jpg", exif=exif)
        assert app.run(tmp_path / "phone.jpg").color.shape == (160, 120, 3)
        app.keep = 2
        for _ in range(3):
            app.run(photo)
        assert len(list(app.results.iterdir())) <= 3  # older results are deleted
    finally:
        ws = app.workspace
        app.close()
    assert not ws.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.skip("browser test: Playwright for Python is not installed (pip install playwright; the dev extra has it)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"browser test: no Chromium at {CHROMIUM} (apt-get install chromium; `make test` tries it)")
    pytest.importorskip("gradio", reason="browser test: gradio is not installed (the app extra)")


@pytest.mark.browser
def test_app_in_headless_chromium(micro_ckpt, photo, tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from bridgedepth.mde.predictor import read_png16

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "bridgedepth", "app", "--model", str(micro_ckpt), "--port", str(port),
                               "--examples", str(photo)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"the app exited: {(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the app did not start: {(tmp_path / 'server.log').read_text()[-3000:]}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 800})
            page.goto(url)
            try:
                page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failed.png"))
                pytest.fail(f"the page did not render (screenshot {tmp_path / 'failed.png'}); server log: "
                            f"{(tmp_path / 'server.log').read_text()[-3000:]}")
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            depth = page.locator("#depth-image img")
            depth.wait_for(state="visible", timeout=60_000)
            page.wait_for_function("() => { const i = document.querySelector('#depth-image img');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
            size = depth.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            assert size == [160, 120]
            assert "relative disparity" in page.locator("#info").inner_text()
            with page.expect_download(timeout=30_000) as dl:
                page.locator("#download-png16").click()
            got = tmp_path / dl.value.suggested_filename
            dl.value.save_as(got)
            v, meta = read_png16(got)
            assert v.shape == (120, 160) and meta["kind"] == "disparity"
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            if os.environ.get("BRIDGE_APP_SCREENSHOT"):
                shutil.copy(tmp_path / "app.png", os.environ["BRIDGE_APP_SCREENSHOT"])
            # a non-image upload: a message on the page, not a stack trace
            (tmp_path / "notes.png").write_text("not an image")
            page.reload()
            page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
            page.locator("#upload input[type=file]").set_input_files(str(tmp_path / "notes.png"))
            page.get_by_text("not an image we can read").first.wait_for(timeout=30_000)
            assert "Traceback" not in page.content()
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
