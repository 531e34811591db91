"""Exception types shared by every stage (a leaf module: imports nothing of ours)."""


class BridgeError(Exception):
    """A user-facing error: bad input, bad configuration, missing file. The CLI prints it without a
    traceback and exits with status 2. The message names the file (or key) and the reason."""


class InputError(BridgeError, ValueError):
    """An input file or argument is unusable (names the path and the reason)."""
