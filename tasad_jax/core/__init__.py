"""Generic pieces every stage shares: names of stages and outputs, the train
state, the stage contract and its jitted phases, sharding, losses, image
scores, the resize geometry and metrics. Imports only `runtime`."""
