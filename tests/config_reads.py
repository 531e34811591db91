"""Which configuration values a piece of code reads: a test helper.

``ConfigReads`` patches ``__getattribute__`` of every dataclass in :class:`bridgedepth.config.Config`
so that reading a field records its dotted key (``label.ssim_threshold``; the elements of
``train.data`` count as ``train.data``) under the name given by :meth:`ConfigReads.section`. Copies and
records of a whole configuration are not reads of its values: accesses made by the ``dataclasses``
module (``asdict``, ``replace``, the generated ``__eq__``/``__repr__``) and by ``copy`` are ignored,
so what a stage merely saves (its resolved config.yaml) or compares is not counted, and what it
uses is.

Used by the demo's test to check that every stage declares, as its ``settings``, each value it reads
(a rerun with another value remakes the stage; an undeclared one would silently keep old work).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import typing
from collections import defaultdict

from bridgedepth.config import Config

import bridgedepth.config as _config_module

# copies, records and checks of a configuration: the dataclasses machinery, copy, and config.py itself
# (loading, validating, flattening); the dataclasses' generated methods run as "<string>"
_IGNORED_CALLERS = (dataclasses.__file__, __import__("copy").__file__, _config_module.__file__, "<string>")


def _classes(root: type = Config, prefix: str = "") -> dict[type, str]:
    """Each dataclass in the configuration tree -> its dotted prefix (each must appear once)."""
    out: dict[type, str] = {root: prefix}
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        tp = hints[f.name]
        args = typing.get_args(tp)
        inner = args[0] if typing.get_origin(tp) is list and args else tp
        if dataclasses.is_dataclass(inner):
            key = f"{prefix}{f.name}"
            # a list of dataclasses is one value (flatten keeps lists whole): its fields read as the list
            sub = _classes(inner, f"{key}.") if inner is tp else {inner: f"{key}[]."}
            for cls, p in sub.items():
                if cls in out:
                    raise ValueError(f"{cls.__name__} appears twice in the configuration ({out[cls]}, {p})")
                out[cls] = p
    return out


class ConfigReads:
    """``derivations``: names of functions that derive a stage's configuration from other keys (the zoo's
    ``_depth_cfg`` makes ``train.lr`` of ``zoo.depth_lr``): their reads are not counted, the derived
    configuration's are."""

    def __init__(self, derivations: tuple[str, ...] = ()):
        self.reads: dict[str, set[str]] = defaultdict(set)
        self.current: str | None = None
        self.derivations = frozenset(derivations)
        self._patched: list[type] = []

    @contextlib.contextmanager
    def section(self, name: str):
        """Record the reads made inside under ``name`` (sections do not nest: the inner one wins)."""
        prev, self.current = self.current, name
        try:
            yield
        finally:
            self.current = prev

    def __enter__(self):
        tracker = self
        for cls, prefix in _classes().items():
            names = {f.name for f in dataclasses.fields(cls)}
            nested = {f.name for f in dataclasses.fields(cls)
                      if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])}
            leaf = prefix.endswith("[].")

            def getattribute(obj, name, _names=names, _nested=nested, _prefix=prefix, _leaf=leaf):
                if tracker.current is not None and name in _names and name not in _nested:
                    code = sys._getframe(1).f_code
                    if code.co_filename not in _IGNORED_CALLERS and code.co_name not in tracker.derivations:
                        key = _prefix[:-3] if _leaf else f"{_prefix}{name}"
                        tracker.reads[tracker.current].add(key)
                return object.__getattribute__(obj, name)

            cls.__getattribute__ = getattribute
            self._patched.append(cls)
        return self

    def __exit__(self, *exc):
        for cls in self._patched:
            del cls.__getattribute__
        self._patched.clear()
        return False


@contextlib.contextmanager
def stage_reads(monkeypatch, derivations: tuple[str, ...] = ()):
    """Within: every ``StageRunner.run`` (and the in-process stages of ``run_parallel``) records the
    configuration values its stage function reads and the ``settings`` it declares. Yields
    ``(reads, declared)``: stage name -> set of keys, stage name -> declared settings (None: none)."""
    from bridgedepth.stages import StageRunner

    tracker, declared = ConfigReads(derivations), {}
    run = StageRunner.run

    def tracked(self, name, fn, outputs=(), inputs=(), settings=None):
        declared[name] = settings

        def wrapped():
            with tracker.section(name):
                return fn()

        return run(self, name, wrapped, outputs, inputs, settings)

    monkeypatch.setattr(StageRunner, "run", tracked)
    with tracker:
        yield tracker.reads, declared
    monkeypatch.setattr(StageRunner, "run", run)
