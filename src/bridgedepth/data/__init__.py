"""Source data: procedural scenes, real source-dataset adapters, benchmarks, the shard store (imports io)."""
