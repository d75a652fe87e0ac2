"""The workflow front end: config validation before any job, what each job script does first, the GPU pool."""
