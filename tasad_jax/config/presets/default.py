"""Paper settings for TASAD on one MVTec AD category (Shah et al., 2023).

Override any field on the command line, e.g.
  python train.py --config=configs/default.py --workdir=runs/bottle \
      --config.data.root=/data/mvtec_anomaly_detection --config.data.category=bottle
"""

import ml_collections

from tasad_jax import methods


def get_config() -> ml_collections.ConfigDict:
  """Returns the default (paper) configuration."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameters, data order and every pseudo-anomaly.

  config.data = ml_collections.ConfigDict()
  config.data.layout = 'mvtec'  # 'mvtec', 'visa' or 'folder' (tasad_jax/datasets/layouts.py).
  config.data.root = ''  # Dataset root (mvtec, visa), or 'embedded' for the built-in demo data.
  config.data.category = 'bottle'  # Folder under root (<root>/<category>/train/good, ...); the folder layout's name.
  config.data.normal_dir = ''  # folder layout: normal images (train, and test by test_fraction).
  config.data.abnormal_dir = ''  # folder layout: defective images; their type is the folder's name.
  config.data.mask_dir = ''  # folder layout, optional: masks <stem>.* or <stem>_mask.* ('' = no masks).
  config.data.normal_test_dir = ''  # folder layout, optional: normal test images ('' = split normal_dir).
  config.data.test_fraction = 0.2  # folder layout without normal_test_dir: share of normal images tested (seeded).
  config.data.image_size = 256  # Images and masks are resized to this square size (the network's input, a tile's side).
  config.data.resize = 'squash'  # 'squash' (to the square, the paper's), 'pad' (aspect kept, padded) or 'tile' (tasad_jax/tiling.py).
  config.data.scale = 1.0  # 'tile': images rescaled by this before tiling (1.0 = native pixels).
  config.data.tile_stride = 0  # 'tile': pixels between test tiles (0 = image_size // 2).
  config.data.tile_blend = 'hann'  # 'tile': overlap blending, 'hann' (smooth window) or 'mean' (uniform).
  config.data.whole_image_pixels = 4_194_304  # 'tile', inference: images whose canvas has at most this many pixels run through each network once (fully convolutional methods); larger ones, or all with 0, by tiles.
  config.data.bucket = 64  # Whole-image inference: canvas sides rounded up to a multiple of this, one compiled program per canvas size.
  config.data.loader = 'folder'  # 'folder' reads files; 'tfds' uses the mvtec_ad builder.
  config.data.tfds_data_dir = ''  # TFDS data_dir for loader='tfds' ('' = TFDS default).
  config.data.load_threads = 0  # Decoding threads (0 = one per CPU).
  config.data.pipeline_threads = 0  # tf.data threads making train samples (0 = tf.data's own pool, one per CPU).
  config.data.labelled_anomalies = ''  # Real defects to train on: '', 'test:N' (N per type) or an MVTec-layout folder.
  config.data.labelled_rate = 0.1  # Share of train samples drawn from the labelled anomalies.
  config.data.augment = ()  # Random flips/rotations of the train images before the pseudo-anomaly: any of 'hflip', 'vflip', 'rot90' (() = none, the paper's).

  config.anomaly = ml_collections.ConfigDict()
  config.anomaly.source = 'tfds:dtd'  # 'builtin', 'tfds:<name>', a folder (DTD or flat), or several joined by ','.
  config.anomaly.tfds_data_dir = ''  # TFDS data_dir of tfds: sources ('' = default).
  config.anomaly.builtin_variants = 32  # Variants per bundled texture for 'builtin'.
  config.anomaly.max_sources = 0  # Use at most this many sources (0 = all).
  config.anomaly.grey_sources = False  # Sources to grey (ours; for grey categories).
  config.anomaly.cas_add_train_images = False  # Coarse stage also pastes the category's images (ours).
  config.anomaly.methods = ('saim', 'perlin')  # Drawn uniformly per anomalous sample.
  config.anomaly.normal_probability = 0.5  # Share of samples left normal.
  config.anomaly.num_augmentations = 3  # Colour ops applied to a source, of colour_ops.
  config.anomaly.colour_ops = ('gamma', 'brightness', 'sharpness', 'autocontrast')  # TASAD's 4; DRAEM's 10 add hue_saturation, solarize, posterize, invert, equalize, rotate.
  config.anomaly.gamma_range = (0.5, 2.0)  # Per-channel gamma contrast.
  config.anomaly.brightness_multiply = (0.8, 1.2)  # Brightness factor.
  config.anomaly.brightness_add = (-30.0, 30.0)  # Brightness offset, on 0..255.
  config.anomaly.sharpness_range = (0.0, 2.0)  # PIL sharpness factor.
  config.anomaly.saim_n_segments = (30, 150, 250)  # SLIC segment counts: large/medium/small.
  config.anomaly.saim_fraction = 0.1  # Share of a source's superpixels pasted.
  config.anomaly.saim_rotations = (0, 90, 180)  # Source rotations in degrees.
  config.anomaly.slic_compactness = 8.0  # SLIC compactness of the source maps.
  config.anomaly.slic_sigma = 1.0  # SLIC Gaussian pre-smoothing.
  config.anomaly.perlin_max_exponent = 5  # Perlin lattice 2^a x 2^b, a, b in 0..5.
  config.anomaly.perlin_threshold_range = (0.0, 1.0)  # Mask = noise > t, t uniform here.
  config.anomaly.perlin_beta_range = (0.0, 0.8)  # Blend opacity 1 - beta.
  config.anomaly.coarse_methods = ()  # Kinds of the coarse stage's stream only (() = methods).
  for name, value in methods.anomaly_defaults().items():
    # Settings of a method's own kinds (anoseg_hard, draem_perlin), with their
    # one-line comments in the method's module (tasad_jax/methods/<name>.py).
    config.anomaly[name] = value
  config.anomaly.fas_source_fraction = 0.1  # Share of the sources the fine stage draws from.
  config.anomaly.fas_add_train_images = True  # Fine stage also pastes the category's images.

  config.coarse = ml_collections.ConfigDict()
  config.coarse.name = 'tasad_cas'  # Coarse stage: 'tasad_cas', 'destseg', 'anoseg', 'cavga' or 'draem' (tasad_jax/methods).
  config.coarse.plugins = ()  # Modules to import that register more coarse methods.
  for name, defaults in methods.default_sections().items():
    # Each method's settings, config.coarse.<name>, with their defaults and
    # one-line comments in the method's module (tasad_jax/methods/<name>.py).
    config.coarse[name] = ml_collections.ConfigDict(defaults)

  config.model = ml_collections.ConfigDict()
  config.model.width = 128  # TASAD segmenter width w (CAS, FAS): 11,959,681 parameters.
  config.model.dtype = 'float32'  # Compute dtype ('bfloat16' on accelerators); params f32.
  config.model.norm = 'batch'  # TASAD segmenter's normalisation: 'batch' (paper) or 'group' (per sample).
  config.model.norm_groups = 8  # GroupNorm groups with norm='group' (the gcd with each layer's channels).
  config.model.skip = 'none'  # TASAD segmenter's skip connections: 'none' (paper), 'concat' or 'add' (U-Net style, ours).
  config.model.levels = 2  # TASAD segmenter's 2x poolings: 2 (paper), 3 or 4 (ours); data.image_size must divide by 2^levels.
  config.model.widths = ()  # TASAD segmenter's channels per level, levels + 1 of them (() = width * 2^level, the paper's).
  config.model.cas_loss = ('mse', 'ssim')  # CAS loss terms, summed: paper 'mse' + 'ssim' (1 - SSIM) on the raw map; 'focal', 'bce' or 'dice' make the output a logit and the map its sigmoid (core/losses.py).
  config.model.fas_loss = ('mse',)  # FAS loss terms (paper: 'mse'), as cas_loss.
  config.model.cas_loss_weights = ()  # One weight per cas_loss term (() = all 1).
  config.model.fas_loss_weights = ()  # One weight per fas_loss term (() = all 1).
  config.model.focal_gamma = 2.0  # Focal term's exponent (DRAEM's and DeSTSeg's 2).
  config.model.focal_alpha = -1.0  # Focal term's weight of defect pixels in [0, 1] (< 0: none).
  config.model.fine_score = 'combined'  # Image score with FAS: 'combined' scores the coarse+FAS map (paper); 'coarse' keeps the coarse stage's score (the map stays coarse+FAS).
  config.model.score_window = 21  # Image score: max of the map after a window x window mean filter (paper 21 at 256²); 0: 21 scaled to data.image_size.

  config.refine = ml_collections.ConfigDict()
  config.refine.train_histogram_fraction = 1.0  # p while training FAS.
  config.refine.train_seed_threshold = 0  # v while training FAS.
  config.refine.test_histogram_fraction = 0.95  # p at test: drops the dominant intensities.
  config.refine.test_seed_threshold = 30  # v at test, on 0..255.
  config.refine.n_segments = 250  # SLIC of the image for the FAS crop.
  config.refine.compactness = 8.0  # SLIC compactness.
  config.refine.sigma = 1.0  # SLIC Gaussian pre-smoothing.
  config.refine.on_device = True  # FAS input in JAX (jitted); False: host scikit-image.

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32  # Test images per jitted batch (global).
  config.eval.num_visualizations = 8  # Heat-map PNGs written per category.
  config.eval.aupro_fpr_limit = 0.3  # AUPRO integrates the PRO curve up to this FPR.
  config.eval.folder = 'eval'  # Outputs under <workdir>/<folder> (e.g. 'eval_validation' for a validation split's).
  config.eval.while_training = False  # Evaluate a workdir a training run holds (its finished checkpoints); False refuses it.
  config.eval.max_side = 0  # 'pad'/'tile': pixel metrics at the working resolution, long side capped at this (0 = no cap).

  config.threshold = ml_collections.ConfigDict()
  config.threshold.holdout_fraction = 0.1  # Normal train images held out to set thresholds.
  config.threshold.target_false_alarm_rate = 0.01  # Share of normal images/pixels flagged.

  config.restore_step = 0  # Evaluation restores this checkpoint step of each stage (0 = the latest).
  config.stages = ('cas', 'fas')  # Stages to train, in order; FAS needs a trained CAS.
  config.distributed = ml_collections.ConfigDict()  # Multi-process jobs (tasad_jax/distributed.py).
  config.distributed.enabled = False  # Join a multi-host job; unset fields below come from the cluster (SLURM, TPU, Open MPI).
  config.distributed.num_processes = 1  # Processes in the job; > 1 alone launches them locally on this machine.
  config.distributed.coordinator_address = ''  # host:port of process 0 ('' = from the cluster, or the local launcher).
  config.distributed.process_id = -1  # This process's id, 0..num_processes-1 (-1 = from the cluster or the launcher).
  config.distributed.local_device_count = 0  # CPU devices per process (0 = JAX's default); for one-machine runs.
  config.distributed.heartbeat_timeout_s = 100  # A process silent this long counts as dead; the others stop.
  config.distributed.initialization_timeout_s = 300  # How long processes wait for each other to join.
  config.distributed.shutdown_timeout_s = 300  # How long a finished process waits for the others at exit.

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8  # Global batch over all devices (the reference uses 1).
  config.train.cas_steps = 100_000  # CAS steps (reference: 4000 epochs at batch 1).
  config.train.fas_steps = 100_000  # FAS steps.
  config.train.learning_rate = 1e-4  # Adam.
  config.train.lr_decay_at = (0.8, 0.9)  # Fractions of the steps where the lr drops.
  config.train.lr_decay_factor = 0.2  # Factor at each drop.
  config.train.lr_schedule = 'step'  # 'step': lr_decay_* above (TASAD's); 'cosine': cosine decay to 0 (CAS, FAS, AnoSeg).
  config.train.lr_warmup = 0.0  # Fraction of the steps with a linear warm-up from 0 (either schedule).
  config.train.checkpoint_every = 1000  # Steps between checkpoints (and at the end).
  config.train.max_checkpoints = 2  # Checkpoints kept per stage.
  config.train.log_every = 100  # Steps between scalar summaries.
  config.train.image_every = 5000  # Steps between image summaries (0 = never).
  config.train.skip_nonfinite = False  # Skip non-finite steps instead of stopping.
  config.train.ema_decay = 0.0  # In [0, 1): >0 keeps an EMA of the parameters (decay d, warm-up) that inference uses (ours; 0 = none, the paper).
  return config
