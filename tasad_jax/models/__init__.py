"""Networks: TASAD's segmenter (CAS and FAS are two instances), the
segmenter's state and L2+SSIM phase shared by the stages built on it, and
ResNet-18 with its torchvision weight conversion."""
