"""procrastinate's own way to finish a batch, the reference the set-wise finish is held to."""
