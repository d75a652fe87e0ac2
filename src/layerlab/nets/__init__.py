"""Networks: the model plug-ins, BatchNorm variants, decision heads and the layer protocol the probes read."""
