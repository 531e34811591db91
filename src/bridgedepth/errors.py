"""Exception types shared by every stage (a leaf module: imports nothing of ours)."""


class BridgeError(Exception):
    """A user-facing error: bad input, bad configuration, missing file. The CLI prints it without a
    traceback and exits with status 2. The message names the file (or key) and the reason."""


class InputError(BridgeError, ValueError):
    """An input file or argument is unusable (names the path and the reason)."""


class StorageError(BridgeError, OSError):
    """Writing an output failed for a reason outside the program (disk full, quota, read-only
    file system). Names the path; what was complete before stays complete and a rerun resumes."""

    def __init__(self, message: str, errno: int | None = None, path=None):
        super().__init__(message)
        self.message = message
        self.errno, self.filename = errno, None if path is None else str(path)

    def __str__(self) -> str:
        return self.message


def raise_if_storage(e: OSError, path=None) -> None:
    """Raise ``e`` as a :class:`StorageError` naming ``path`` (or the path in ``e``) when it is a
    disk-full / quota / file-size / read-only error; otherwise return (the caller re-raises ``e``)."""
    import errno as _errno

    codes = {_errno.ENOSPC, _errno.EFBIG, _errno.EROFS, getattr(_errno, "EDQUOT", 122)}
    if isinstance(e, StorageError) or e.errno not in codes:
        return
    where = e.filename if path is None else path
    msg = (f"{where if where is not None else 'an output file'}: cannot write ({e.strerror or e}); "
           "completed outputs are kept and nothing partial is left visible; free space and rerun the "
           "same command to resume")
    raise StorageError(msg, e.errno, where) from e
