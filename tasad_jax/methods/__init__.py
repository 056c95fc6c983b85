"""Coarse stages, chosen by `config.coarse.name`.

    tasad_cas  TASAD's coarse segmenter (default; Shah et al., 2023)
    destseg    DeSTSeg (Zhang et al., CVPR 2023): frozen ResNet-18 teacher,
               denoising student, segmentation net on their feature distances
    cavga      CAVGA (Venkataramanan et al., ECCV 2020): convolutional
               adversarial VAE, Grad-CAM attention expansion; weak=True: CAVGA-Rw
    draem      DRAEM (Zavrtanik et al., ICCV 2021): reconstructive net, then a
               discriminative U-Net on [reconstruction, image]; Perlin anomalies

TASAD's fine stage (`tasad_jax.fine.fas`), evaluation, predict and export work on
any of them. A method is one module that subclasses `base.CoarseMethod` and
registers itself with `@registry.register`; `registry.BUNDLED` lists the
package's own, `config.coarse.plugins` names others.
"""

from tasad_jax.methods import base, registry

CoarseMethod = base.CoarseMethod
REGISTRY = registry.REGISTRY
get = registry.get
method_class = registry.method_class
name_of = registry.name_of
default_sections = registry.default_sections
anomaly_defaults = registry.anomaly_defaults
