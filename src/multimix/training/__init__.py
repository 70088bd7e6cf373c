"""Training, method-free: `streams` (the data a run reads, epoch by epoch) and
`loop` (epochs, validation, checkpoints and resume, MLflow, progress). What a
step computes belongs to a method (`multimix.methods`)."""
