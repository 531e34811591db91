"""Shared test fixtures. Tests never reach a network; real fixtures come from ../shared/data."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRIDGE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared fixtures not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:  # shown by pytest on failure
        return f"CliResult(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def run_cli():
    """Run `bridge ARGS...` in-process; returns CliResult(code, out, err)."""
    from bridgedepth.cli import main

    def _run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse errors, --help, --version
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return CliResult(code, out.getvalue(), err.getvalue())

    return _run


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    """A tiny random transformers DepthAnything teacher saved to a folder (the d2i depth reward's)."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.teacher import tiny_teacher_config

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("teacher")
    DepthAnythingForDepthEstimation(tiny_teacher_config()).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def micro_ckpt(tmp_path_factory):
    """A saved ``micro`` depth checkpoint with a scale head (relative and metric output), input 56."""
    import torch

    from bridgedepth.mde import build_model, save_model
    from bridgedepth.mde.model import ScaleHead

    d = tmp_path_factory.mktemp("ckpt")
    head = ScaleHead(32, hidden=8)
    with torch.no_grad():
        head.mlp[2].bias.copy_(torch.tensor([0.0, 0.5]))
    save_model(build_model("micro", seed=0), d, scale_head=head, input_size=56)
    return d
