"""Depth and image formats: readers, writers, validation, units. A leaf: imports nothing else of bridgedepth except errors."""
