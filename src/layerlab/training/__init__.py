"""Training: the one loop, its stages and regimes, objectives, optimizers, checkpoints, memory accounting."""
