"""Datasets: prepared once with provenance, loaded as tensors on the training device."""
