"""Evaluation: alignment, metrics, benchmark loaders and runner, tables (imports io, data, mde)."""
