"""Running trained stages: the two-stage program, the one whole-image path
(squash, pad, tile), thresholds, `tasad_jax.load` and folder prediction."""
