"""TASAD's fine stage (FAS) on top of any coarse method: the stage and its
input (`fas`), the superpixel selection and crop (`selection`), and SLIC in
JAX (`slic`)."""
