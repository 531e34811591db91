"""One module per `bridge` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""
