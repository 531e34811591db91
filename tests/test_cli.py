from bridgedepth import __version__
from bridgedepth.cli import SUBCOMMANDS


def test_version(run_cli):
    r = run_cli("--version")
    assert r.code == 0 and __version__ in r.out


def test_help_lists_every_subcommand_with_purpose(run_cli):
    r = run_cli("--help")
    assert r.code == 0
    for name, (_, purpose) in SUBCOMMANDS.items():
        assert name in r.out
        assert purpose[:30] in r.out.replace("\n", " ").replace("  ", " ") or purpose.split()[0] in r.out


def test_subcommand_modules_exist_and_agree():
    import importlib

    for name, (mod, purpose) in SUBCOMMANDS.items():
        m = importlib.import_module(f"bridgedepth.commands.{mod}")
        assert callable(m.add_arguments) and callable(m.run), name
        assert m.HELP == purpose, name


def test_a_command_leaves_no_process_group_behind(run_cli, tmp_path):
    """Under torchrun a command's gloo group is destroyed before the interpreter exits (left to the
    exit-time destructors it can abort a rank after its work is done)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        r = run_cli("zoo", "list")
        assert r.code == 0, r.err
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
