"""Labelling: teacher pseudo-labels, similarity masks, hybrid dataset assembly (imports mde, io, data)."""
