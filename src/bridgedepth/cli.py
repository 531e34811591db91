"""`bridge` — the command-line tool. Thin: parse, load config, call one function per stage.

Each subcommand lives in ``bridgedepth.commands.<module>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their subcommand
runs, so ``bridge --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import signal
import sys

from . import __version__
from .config import ConfigError
from .errors import BridgeError

# name -> (module, one-line purpose). The purpose is repeated here so that --help needs no imports.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the whole BRIDGE pipeline end to end on the embedded default and write a report"),
    "config": ("config", "show presets and the fully resolved configuration"),
    "inspect": ("inspect", "describe a depth file (shape, valid fraction, metre range) or an image"),
    "shards": ("shards", "verify shard sets (manifest, checksums, completeness)"),
    "scenes": ("scenes", "render procedural RGB-D scenes into shards, or a contact sheet of them"),
    "sources": ("sources", "list source-dataset adapters and convert a dataset to shards"),
    "d2i": ("d2i", "depth-to-image model: pretrain the tiny backend, reward fine-tune with LoRA"),
    "generate": ("generate", "generate RGB images from source depth shards with a D2I model"),
    "mask": ("mask", "similarity mask for one (generated, original) image pair, with JSON statistics"),
    "label": ("label", "pseudo-label generated shards with a teacher and add similarity masks"),
    "train": ("train", "train a depth model stage (teacher, students, metric, scale head)"),
    "predict": ("predict", "predict depth for images, folders, globs or lists"),
    "convert-checkpoint": ("convert_checkpoint", "convert an original Depth-Anything-V2 checkpoint"),
    "eval": ("eval", "evaluate predictions or a model on a benchmark with the standard protocol"),
    "export": ("export", "export a depth checkpoint to ONNX, verified against PyTorch with onnxruntime"),
    "app": ("app", "the web app: upload an image, see and download its depth (needs the app extra: gradio)"),
    "zoo": ("zoo", "the shipped toy foundation models: list them, or build (train) them from procedural scenes"),
}


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    """The shared config options: ``--preset NAME|FILE`` and repeated ``--set key.path=value``."""
    p.add_argument("--preset", "-c", default=default_preset, help="preset name in configs/ or a YAML file")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, e.g. --set train.lr=1e-5 (repeatable)",
    )


def config_from_args(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.preset, args.overrides)


def _available_module(modname: str):
    try:
        return importlib.import_module(f"bridgedepth.commands.{modname}")
    except ModuleNotFoundError as e:
        if e.name == f"bridgedepth.commands.{modname}":
            return None
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="BRIDGE: reward-tuned depth-to-image data generation and monocular depth estimation.",
    )
    parser.add_argument("--version", action="version", version=f"bridgedepth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (modname, purpose) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=purpose, description=purpose)
        if name == only:
            mod = _available_module(modname)
            if mod is None:
                sp.set_defaults(_missing=name)
            else:
                mod.add_arguments(sp)
                sp.set_defaults(_run=mod.run)
    return parser


RESUME_HINT = ("completed shards and the last checkpoint are kept, a shard being written was discarded; "
               "rerun the same command to resume")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop) turned into the same clean unwinding as Ctrl-C."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by a subprocess test
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        print(f"bridge {args._missing}: not built yet in this version of bridgedepth.", file=sys.stderr)
        return 3
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    else:  # pragma: no cover - signal handlers can only be set from the main thread
        previous = None
    try:
        return int(args._run(args) or 0)
    except (BridgeError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refusing code
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"error: refused to load a pickle that is not tensors-only ({first})", file=sys.stderr)
        return 2
    except OSError as e:
        from .errors import raise_if_storage

        try:
            raise_if_storage(e)
        except BridgeError as se:
            print(f"error: {se}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"bridge {args.command}: {what}; {RESUME_HINT}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _close_process_group()


def _close_process_group() -> None:
    """Destroy the torch.distributed process group a command started (torchrun/accelerate), if any,
    before the interpreter exits: a gloo group left to the exit-time destructors can abort a rank
    ("terminate called without an active exception") after its work is done."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return
    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception as e:  # pragma: no cover - best effort at exit
        print(f"warning: could not destroy the process group: {e}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
