"""Adapters that read real source datasets from their native on-disk layouts."""
