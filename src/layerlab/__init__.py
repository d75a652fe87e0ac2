"""layerlab: layer-wise studies of deep-network trainability."""

__version__ = "0.1.0"
