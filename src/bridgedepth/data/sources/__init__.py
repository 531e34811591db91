"""Adapters that read real source datasets from their native on-disk layouts.

``get_adapter(name, root, encoding=None, **options)`` builds one; ``adapter.iter_samples(report)``
yields samples in the schema of docs/architecture.md and records bad frames (path + reason) in a
:class:`SourceReport`; :func:`convert_source` writes them as shards. ``describe_adapters()`` lists
every adapter with its expected layout. See docs/sources.md.
"""

from .base import SampleError, SampleRef, Skipped, SourceAdapter, SourceReport, make_key
from .convert import convert_source
from .pairing import PairingResult, pair_files, pair_files_report
from .registry import ADAPTERS, adapter_names, describe_adapters, get_adapter, get_adapter_class

__all__ = [
    "ADAPTERS", "PairingResult", "SampleError", "SampleRef", "Skipped", "SourceAdapter", "SourceReport",
    "adapter_names", "convert_source", "describe_adapters", "get_adapter", "get_adapter_class", "make_key",
    "pair_files", "pair_files_report",
]
