"""The names of the stages and outputs, defined once.

Two stages train, one after the other, and their names are also their
checkpoint folders (`<workdir>/checkpoints/<stage>`):

* `COARSE_STAGE` ('cas'): the coarse stage, whatever method fills it (TASAD's
  CAS by default, or DeSTSeg, AnoSeg, CAVGA, ...);
* `FINE_STAGE` ('fas'): TASAD's fine stage on top of it.

Inference has two outputs, the keys of maps, scores, thresholds and
metrics.json (`<output>_map`, `<output>_score`):

* `COARSE` ('cas'): the coarse stage's map alone;
* `TWO_STAGE` ('tasad'): coarse + fine.

These strings are on disk in every workdir, so they keep their historical
spelling; code says `names.COARSE` or `names.TWO_STAGE`, and the table shows
each method's own labels (`methods.base.CoarseMethod.row_labels`).
"""

COARSE_STAGE = 'cas'
FINE_STAGE = 'fas'
STAGES = (COARSE_STAGE, FINE_STAGE)

COARSE = 'cas'
TWO_STAGE = 'tasad'
OUTPUTS = (COARSE, TWO_STAGE)


def final_output(keys) -> str:
  """The last output present in `keys` (a report, or map/score keys)."""
  keys = set(keys)
  return (TWO_STAGE if TWO_STAGE in keys or f'{TWO_STAGE}_map' in keys
          or f'{TWO_STAGE}_score' in keys else COARSE)


def present(keys) -> list[str]:
  """The outputs present in `keys` (reports by output, or '<output>_map')."""
  keys = set(keys)
  return [m for m in OUTPUTS if m in keys or f'{m}_map' in keys]
