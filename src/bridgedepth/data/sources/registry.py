"""The adapter registry: dataset name -> adapter class (one-line description + expected layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import InputError
from .base import SourceAdapter

ADAPTERS: dict[str, type[SourceAdapter]] = {}


def register(cls: type[SourceAdapter]) -> type[SourceAdapter]:
    if not cls.name or cls.name in ADAPTERS:
        raise ValueError(f"adapter name {cls.name!r} is empty or already registered")
    ADAPTERS[cls.name] = cls
    return cls


def _load_all() -> None:
    # importing the modules registers their adapters
    from . import hypersim  # noqa: F401  (listing order = import order)
    from . import tartanair  # noqa: F401
    from . import vkitti2  # noqa: F401
    from . import irs  # noqa: F401
    from . import blendedmvs  # noqa: F401
    from . import spring  # noqa: F401
    from . import folder  # noqa: F401


def adapter_names() -> list[str]:
    _load_all()
    return list(ADAPTERS)


def get_adapter_class(name: str) -> type[SourceAdapter]:
    _load_all()
    if name not in ADAPTERS:
        raise InputError(f"unknown source dataset {name!r}; available: {', '.join(ADAPTERS)}")
    return ADAPTERS[name]


def get_adapter(name: str, root: str | Path, encoding: str | None = None, **options: Any) -> SourceAdapter:
    """Build the adapter ``name`` over the dataset at ``root`` (options are adapter-specific)."""
    return get_adapter_class(name)(root, encoding=encoding, **options)


def describe_adapters() -> str:
    """Human-readable list: name, description, encodings, options and the expected layout."""
    _load_all()
    out = []
    for name, cls in ADAPTERS.items():
        out.append(f"{name}: {cls.description}")
        if cls.encodings:
            out.append(f"  depth encodings: {', '.join(cls.encodings)}")
        if cls.options:
            out.append("  options (--opt KEY=VALUE):")
            for k, v in cls.options.items():
                out.append(f"    {k}: {v}")
        out.append("  expected layout:")
        out.extend("    " + line for line in cls.layout.strip("\n").splitlines())
        out.append("")
    return "\n".join(out).rstrip() + "\n"
