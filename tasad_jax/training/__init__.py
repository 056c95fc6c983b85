"""The training loop, the same for every stage: checkpoints, resume, logs,
thresholds."""
