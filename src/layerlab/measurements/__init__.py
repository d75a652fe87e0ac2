"""Measurements beside training (`measurements:` in a study): one job per cell on its init or trained network."""
