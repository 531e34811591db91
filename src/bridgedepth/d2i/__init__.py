"""Depth-to-image: generator backends, differentiable sampler, rewards, reward fine-tuning (imports mde)."""
