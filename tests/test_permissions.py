"""Files we write are readable by the other users of a shared folder: the mode an ordinary open()
gives (0666 minus the umask), never the private 0600 of tempfile.mkstemp or safetensors' save_file."""

import os
import tempfile

import torch

from bridgedepth.io import usual_permissions


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _modes(folder):
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}


def test_safetensors_alone_writes_private_files_and_the_helper_fixes_them(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(p))  # 0600 with safetensors 0.8
    usual_permissions(p)
    assert p.stat().st_mode & 0o777 == 0o666 & ~_umask()
    fd, name = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    usual_permissions(tmp_path)  # a folder: every file under it
    assert os.stat(name).st_mode & 0o777 == 0o666 & ~_umask()


def test_checkpoints_scorers_unets_and_lora_files_get_the_usual_mode(tmp_path):
    from bridgedepth.d2i.lora import add_lora, save_lora
    from bridgedepth.d2i.scorer import ToyAestheticScorer
    from bridgedepth.d2i.tiny import TinyBackend, build_scheduler, build_unet
    from bridgedepth.mde.model import build_model, save_model

    want = 0o666 & ~_umask()
    save_model(build_model("micro", seed=0), tmp_path / "mde")
    ToyAestheticScorer(32, (8, 8)).save(tmp_path / "scorer")
    be = TinyBackend(build_unet(16, channels=(8, 8), attention_head_dim=4), build_scheduler())
    be.save(tmp_path / "d2i")
    add_lora(be.denoiser, rank=2, alpha=2)
    (tmp_path / "lora").mkdir()
    save_lora(be.denoiser, tmp_path / "lora" / "pytorch_lora_weights.safetensors")
    modes = {}
    for sub in ("mde", "scorer", "d2i", "lora"):
        modes.update({f"{sub}/{k}": v for k, v in _modes(tmp_path / sub).items()})
    assert any(k.endswith(".safetensors") for k in modes) and len(modes) >= 8, modes
    assert {k: oct(v) for k, v in modes.items() if v != want} == {}
