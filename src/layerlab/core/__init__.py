"""The lowest layer, torch-free: cells from a study config, the plug-in registries, metric stores, messages."""
