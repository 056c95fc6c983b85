"""Networks: TASAD's segmenter (CAS and FAS are two instances), the
segmenter's state and L2+SSIM phase shared by the stages built on it, and
ResNet-18 with its torchvision weight conversion."""


def __getattr__(name):
  """`tasad_jax.models.Segmenter` and the rest of the former `models` module."""
  import importlib  # pylint: disable=g-import-not-at-top
  return getattr(importlib.import_module('tasad_jax.models.segmenter'), name)
