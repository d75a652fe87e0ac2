"""Training probes: measurements during training at the loop's hooks (`base.TrainingProbe`); one module each."""
