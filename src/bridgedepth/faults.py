"""Fault injection for the reliability tests (docs/reliability.md). Inert unless an environment
variable names a point; a leaf module (imports nothing of ours).

``BRIDGE_TEST_KILL_AT=POINT[:N]``
    the process sends itself SIGKILL the N-th time (default 1st) it reaches ``POINT``: no
    ``finally``, no ``atexit``, exactly what an out-of-memory killer or a lost node does.
``BRIDGE_TEST_ENOSPC_AT=POINT[:N]``
    reaching ``POINT`` for the N-th time (and every time after it) raises ``OSError(ENOSPC)`` for
    the path given, as a full disk would.
``BRIDGE_TEST_DELAY_AT=POINT:SECONDS``
    sleep that long at every ``POINT`` (so a test can send SIGINT / SIGTERM mid-job).

Points (each a one-line call where the work happens):
``shard-write`` a sample is being added to a shard (its temporary file is open),
``shard-commit`` a shard's tar is complete and renamed, its status file not yet written,
``shard-done`` a shard and its status file are complete (between shards),
``scene-render`` a rendering worker of ``bridge scenes --workers N`` starts a scene,
``ckpt-write`` a checkpoint's files are written to its temporary folder, not yet renamed,
``ckpt-swap`` the previous checkpoint has been moved aside, the new one not yet renamed into place,
``train-step`` an optimiser step has finished.
"""

from __future__ import annotations

import errno
import os
import signal

KILL_ENV = "BRIDGE_TEST_KILL_AT"
ENOSPC_ENV = "BRIDGE_TEST_ENOSPC_AT"
DELAY_ENV = "BRIDGE_TEST_DELAY_AT"
_counts: dict[str, int] = {}


def _armed(env: str, name: str, count: int) -> bool:
    spec = os.environ.get(env)
    if not spec:
        return False
    point, _, nth = spec.partition(":")
    if point != name:
        return False
    n = int(nth) if nth else 1
    return count == n if env == KILL_ENV else count >= n


def point(name: str, path: str | os.PathLike | None = None) -> None:
    """Mark a point where a job can die or a write can fail (no-op unless armed by the environment)."""
    if KILL_ENV not in os.environ and ENOSPC_ENV not in os.environ and DELAY_ENV not in os.environ:
        return
    delay = os.environ.get(DELAY_ENV, "")
    if delay.partition(":")[0] == name:
        import time

        time.sleep(float(delay.partition(":")[2] or 0.5))
    count = _counts[name] = _counts.get(name, 0) + 1
    if _armed(KILL_ENV, name, count):
        os.kill(os.getpid(), signal.SIGKILL)
    if _armed(ENOSPC_ENV, name, count):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else os.fspath(path))
