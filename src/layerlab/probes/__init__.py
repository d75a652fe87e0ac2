"""Layer-wise measurements; one module per probe, each with a reference test."""
