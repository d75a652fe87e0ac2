"""The training regimes (`training:` in a cell), one module each; declared in `layerlab.catalog.regimes`."""
