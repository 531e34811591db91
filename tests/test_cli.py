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
