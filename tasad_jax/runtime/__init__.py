"""The process and its files: errors and the one-line CLI edge, atomic files,
the workdir lock and SIGTERM, multi-process jobs and their launcher, orbax
checkpoints, and the one gateway to TensorFlow. No model code; the bottom
layer."""
