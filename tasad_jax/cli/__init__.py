"""Entry points: absl flags and one call into the package each. The root
scripts and the console scripts (`tasad-train`, ...) both run these."""
