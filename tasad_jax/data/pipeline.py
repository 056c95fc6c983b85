"""The tf.data train stream: normal images and pseudo-anomalies, per stage.

Images and anomaly sources are decoded once into host memory; every training
sample is then a pure function of (seed, stage, global example index): the
example index picks the image through a stateless per-epoch permutation, draws
the source, and seeds the pseudo-anomaly (`tasad_jax.data.pseudo_anomalies`). So the stream
is reproducible, can resume at any step without replaying, and gives the same
global batches whatever the number of hosts: host p of P builds rows
[p*B/P, (p+1)*B/P) of each global batch of size B.

`config.data.resize` (`tasad_jax.core.tiling`): 'squash' trains on images resized
to the square; 'pad' on the padded squares; 'tile' on a random S x S crop of
each image at its working resolution, the crop's position drawn from the
sample's own seed. The pseudo-anomaly is made on the square or crop; with
'pad' and 'tile' it is kept off the padding (mask and pasted pixels there are
dropped and the label follows the mask that is left).

`config.data.augment` (not the paper's; () by default): random flips and
90-degree rotations of the square or crop, drawn from the sample's own seed,
before the pseudo-anomaly is made, so its mask is drawn on the transformed
image; the valid-pixel mask of 'pad' and 'tile' turns with it. A labelled
real defect drawn instead turns with the same draw, image and mask together,
so orientation says nothing about the label.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tasad_jax.core import names
from tasad_jax.data import pseudo_anomalies
from tasad_jax.core import tiling
from tasad_jax.runtime.tf_host import tf
from tasad_jax.data import sources
from tasad_jax.data import splits
from tasad_jax.runtime.errors import UserInputError

# config.data.augment's transforms: a flip of the columns, of the rows, and a
# rotation by k * 90 degrees with k uniform in 0..3, each drawn per sample.
AUGMENTATIONS = ('hflip', 'vflip', 'rot90')


def anomaly_params(config) -> pseudo_anomalies.AnomalyParams:
  """The generator parameters of `config.anomaly`: its fields that
  `AnomalyParams` names, and the rest as the settings of kinds defined
  elsewhere (a method's own)."""
  a = config.anomaly.to_dict()
  own = {f.name: f for f in dataclasses.fields(pseudo_anomalies.AnomalyParams)}
  kwargs = {}
  for name, field in own.items():
    if name in a:
      value = a[name]
      kwargs[name] = (tuple(value) if isinstance(value, (list, tuple))
                      else type(field.default)(value))
  kwargs['settings'] = tuple(
      (k, tuple(v) if isinstance(v, list) else v)
      for k, v in sorted(a.items()) if k not in own)
  try:
    return pseudo_anomalies.AnomalyParams(**kwargs)
  except ValueError as e:
    raise UserInputError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class TrainData:
  """What a stage's train stream draws from: normal images and sources."""
  images: np.ndarray  # uint8 [N, S, S, 3]; 'tile': object [N] of canvases [H_i >= S, W_i >= S, 3].
  pool: sources.SourcePool
  sources: sources.SourcePool  # The configured sources alone (shared by stages).
  labelled: dict | None = None  # Real defects ('image', 'mask'), `tasad_jax.data.weak_labels`.
  boxes: np.ndarray | None = None  # int32 [N, 4] (top, left, height, width) of each image on its square or canvas ('pad', 'tile').


def prepare_train_images(config, images) -> tuple[np.ndarray, np.ndarray | None]:
  """(images to train on, their boxes) of a loaded train split's images:
  as they are ('squash'), padded squares ('pad') or canvases ('tile')."""
  geometry = tiling.Geometry.from_config(config)
  if geometry.mode == 'squash':
    return images, None
  plans = [geometry.plan(*x.shape[:2]) for x in images]
  boards = [tiling.canvas(x, p) for x, p in zip(images, plans)]
  boxes = np.array([(p.top, p.left, p.height, p.width) for p in plans],
                   np.int32).reshape(-1, 4)
  if geometry.mode == 'pad':
    return np.stack(boards), boxes
  return tiling.ragged(boards), boxes


def _square_images(config, images: np.ndarray) -> np.ndarray:
  """Train images (of `prepare_train_images`) as S x S anomaly sources: the images,
  or for 'tile' one crop of each at a seeded position."""
  if images.dtype != object:
    return images
  size = config.data.image_size
  rng = np.random.default_rng([config.seed, 19])
  crops = []
  for board in images:
    y, x = (rng.integers(0, n - size + 1) for n in board.shape[:2])
    crops.append(board[y:y + size, x:x + size])
  return np.stack(crops)


def load_sources(config) -> sources.SourcePool:
  """The configured anomaly sources with their SLIC maps (CAS's pool)."""
  a = config.anomaly
  images = sources.load_source_images(
      a.source, config.data.image_size, seed=config.seed,
      builtin_variants=a.builtin_variants, tfds_data_dir=a.tfds_data_dir or None)
  if a.grey_sources:
    images = sources.to_grey(images)
  if a.max_sources and len(images) > a.max_sources:
    rng = np.random.default_rng([config.seed, 11])
    images = images[np.sort(rng.choice(len(images), a.max_sources, replace=False))]
  return sources.segment_pool(images, tuple(a.saim_n_segments),
                              a.slic_compactness, a.slic_sigma)


def load_train_data(config, stage: str, train_images: np.ndarray | None = None,
                    cas_pool: sources.SourcePool | None = None,
                    labelled: dict | None = None) -> TrainData:
  """Loads the normal images and the source pool of `stage` ('cas' or 'fas').

  The fine stage draws from `fas_source_fraction` of the sources plus, when
  `fas_add_train_images`, the category's own train images (method doc); the
  coarse stage from all sources plus, when `cas_add_train_images`, the train
  images. `cas_pool` is the configured sources (`TrainData.sources`).
  `train_images` are a loaded train split's images (`load_split`).
  """
  if stage not in names.STAGES:
    raise ValueError(f'stage must be one of {names.STAGES}, got {stage!r}')
  if train_images is None:
    train_images = splits.load_split(config, 'train')['image']
  train_images, boxes = prepare_train_images(config, train_images)
  squares = _square_images(config, train_images)
  source_pool = cas_pool if cas_pool is not None else load_sources(config)
  pool = source_pool
  a = config.anomaly
  if stage == 'cas' and a.cas_add_train_images:
    pool = sources.SourcePool.concatenate([pool, sources.segment_pool(
        squares, pool.n_segments, a.slic_compactness, a.slic_sigma)])
  if stage == 'fas':
    parts = []
    if a.fas_source_fraction > 0:
      count = max(1, int(round(a.fas_source_fraction * len(pool))))
      rng = np.random.default_rng([config.seed, 13])
      parts.append(pool.take(np.sort(rng.choice(len(pool), count, replace=False))))
    if a.fas_add_train_images:
      parts.append(sources.segment_pool(squares, pool.n_segments,
                                        a.slic_compactness, a.slic_sigma))
    if not parts:
      raise UserInputError('config.anomaly: the fine stage has no sources; set '
                           'fas_source_fraction > 0 or fas_add_train_images')
    pool = sources.SourcePool.concatenate(parts)
  return TrainData(train_images, pool, source_pool, labelled, boxes)


def _process_split(batch_size: int, process_index: int | None,
                   process_count: int | None) -> tuple[int, int, int]:
  if process_count is None or process_index is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index, process_count = jax.process_index(), jax.process_count()
  if batch_size % process_count:
    raise UserInputError(f'config.train.batch_size: {batch_size} is not '
                         f'divisible by the {process_count} processes')
  return process_index, process_count, batch_size // process_count


def train_dataset(data: TrainData, config, stage: str, *, batch_size: int,
                  start_step: int = 0, process_index: int | None = None,
                  process_count: int | None = None) -> tf.data.Dataset:
  """The infinite train stream of this process, starting at global `start_step`.

  Yields batches {'image', 'augmented': float32 [b, S, S, 3] in [0, 1],
  'mask': float32 [b, S, S, 1] in {0, 1}, 'label': int32 [b], 'real': int32
  [b], 'index': int64 [b] (the global example indices)} where b is the global
  `batch_size` divided by the process count. With labelled anomalies
  (`data.labelled`), a sample is, with probability `config.data.labelled_rate`
  decided by its own seed, one of them drawn uniformly instead of a
  pseudo-anomaly: 'image' and 'augmented' both the defect image, its real mask,
  'label' 1 and 'real' 1 ('real' is 0 otherwise). `config.data.augment`
  flips and turns each sample's image before its pseudo-anomaly (module doc).
  """
  params = anomaly_params(config).for_stage(stage)
  index, count, local = _process_split(batch_size, process_index, process_count)
  num_images = len(data.images)
  num_sources = len(data.pool)
  if num_images == 0 or num_sources == 0:
    raise UserInputError('no train images or no anomaly sources to train on')
  read_image = _image_reader(data, config.data.image_size)
  src_images = tf.constant(data.pool.images)
  src_segments = tf.constant(data.pool.segments.astype(np.int32))
  src_counts = tf.constant(data.pool.num_segments.astype(np.int32))
  base_seed = tf.constant([config.seed, names.STAGES.index(stage)], tf.int64)
  orient = _orienter(config.data.augment)
  real = _real_defects(data.labelled, config, orient)

  def example(i):
    seed = tf.random.experimental.stateless_fold_in(base_seed, i)
    epoch, position = i // num_images, i % num_images
    image_index = tf.random.experimental.index_shuffle(
        position, seed=tf.stack([base_seed[0] * 1000 + base_seed[1], epoch]),
        max_index=num_images - 1)
    s = tf.random.experimental.stateless_split(seed, 2)
    source_index = tf.random.stateless_uniform([], s[0], 0, num_sources,
                                               dtype=tf.int64)
    image, valid = read_image(image_index, seed)
    if orient:
      image, valid = orient(seed, image, valid)
    sample = pseudo_anomalies.synthesize(
        image, tf.cast(tf.gather(src_images, source_index), tf.float32) / 255.0,
        tf.gather(src_segments, source_index),
        tf.gather(src_counts, source_index), s[1], params)
    if valid is not None:
      sample = _off_padding(sample, valid)
    sample['real'] = tf.constant(0, tf.int32)
    return dict(real(sample, seed) if real else sample, index=i)

  ds = tf.data.Dataset.counter(start_step, dtype=tf.int64)
  ds = ds.map(lambda step: step * batch_size + index * local + tf.range(
      local, dtype=tf.int64)).unbatch()
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  threads = int(config.data.pipeline_threads)
  if threads:  # Leaves the other cores to XLA's step (few-core hosts).
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE)


def _image_reader(data: TrainData, size: int):
  """fn(image index, sample seed) -> (float32 image [S, S, 3] in [0, 1], the
  float32 mask [S, S, 1] of its pixels that are not padding, or None)."""
  if data.boxes is None:
    images = tf.constant(data.images)
    return lambda index, seed: (
        tf.cast(tf.gather(images, index), tf.float32) / 255.0, None)
  boxes = tf.constant(data.boxes, tf.int64)
  if data.images.dtype != object:  # 'pad': the padded squares themselves.
    images = tf.constant(data.images)
    return lambda index, seed: (
        tf.cast(tf.gather(images, index), tf.float32) / 255.0,
        _inside(tf.gather(boxes, index), 0, 0, size))
  # 'tile': the canvases, flat, and a crop of each at a seeded position.
  shapes_np = np.array([b.shape[:2] for b in data.images], np.int64)
  starts = tf.constant(np.r_[0, np.cumsum(3 * shapes_np.prod(1))[:-1]],
                       tf.int64)
  flat = tf.constant(np.concatenate([b.ravel() for b in data.images]))
  shapes = tf.constant(shapes_np)
  span = tf.range(size, dtype=tf.int64)

  def read(index, seed):
    height, width = shapes[index][0], shapes[index][1]
    s = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, 3), 2)
    y = tf.random.stateless_uniform([], s[0], 0, height - size + 1,
                                  dtype=tf.int64)
    x = tf.random.stateless_uniform([], s[1], 0, width - size + 1,
                                  dtype=tf.int64)
    rows = starts[index] + ((y + span)[:, None] * width + x) * 3 + tf.range(
        3 * size, dtype=tf.int64)[None, :]
    crop = tf.reshape(tf.gather(flat, rows), [size, size, 3])
    return (tf.cast(crop, tf.float32) / 255.0,
            _inside(tf.gather(boxes, index), y, x, size))
  return read


def _inside(box, y, x, size: int):
  """float32 [S, S, 1]: 1 where the S x S crop at (y, x) of a canvas is inside
  the image's box (top, left, height, width)."""
  rows = tf.cast(y, tf.int64) + tf.range(size, dtype=tf.int64)
  cols = tf.cast(x, tf.int64) + tf.range(size, dtype=tf.int64)
  inside = (((rows >= box[0]) & (rows < box[0] + box[2]))[:, None]
            & ((cols >= box[1]) & (cols < box[1] + box[3]))[None, :])
  return tf.cast(inside, tf.float32)[..., None]


def _off_padding(sample: dict, valid) -> dict:
  """The sample with its pseudo-anomaly kept off the padding."""
  mask = sample['mask'] * valid
  return dict(sample, mask=mask,
              augmented=valid * sample['augmented'] + (1.0 - valid) * sample['image'],
              label=tf.cast(tf.reduce_max(mask) > 0, tf.int32))


def check_augment(augment) -> None:
  """Raises UserInputError unless `augment` is a list of AUGMENTATIONS."""
  ok = isinstance(augment, (list, tuple)) and all(
      isinstance(a, str) and a in AUGMENTATIONS for a in augment)
  if not ok:
    raise UserInputError(f'config.data.augment: {augment!r} must be a tuple '
                         f'of {AUGMENTATIONS} (() = none, the paper\'s)')


def _orienter(augment):
  """fn(seed, *tensors [S, S, C] or None) -> the tensors flipped and
  rotated alike, as `augment` asks and the sample's seed draws; None when
  `augment` is empty (the stream then has no op of it).

  The three draws have seeds of their own (fold_in 5, split), taken whichever
  transforms are on, so adding one leaves the others' draws as they were.
  """
  check_augment(augment)
  kinds = frozenset(augment)
  if not kinds:
    return None

  def orient(seed, *tensors):
    s = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, 5), 3)
    hflip, vflip = (tf.random.stateless_uniform([], s[j], 0, 2, dtype=tf.int32)
                    > 0 for j in (0, 1))
    turns = tf.random.stateless_uniform([], s[2], 0, 4, dtype=tf.int32)

    def apply(x):
      if 'hflip' in kinds:
        x = tf.where(hflip, tf.reverse(x, [1]), x)
      if 'vflip' in kinds:
        x = tf.where(vflip, tf.reverse(x, [0]), x)
      if 'rot90' in kinds:  # Squares only: every stream image is S x S.
        x = tf.image.rot90(x, turns)
      return x
    return tuple(None if x is None else apply(x) for x in tensors)
  return orient


def _real_defects(labelled: dict | None, config, orient=None):
  """fn(sample, seed) replacing a sample by a real defect at
  config.data.labelled_rate, or None without labelled anomalies. With
  `orient` (`_orienter`), the defect's image and mask turn together."""
  rate = float(config.data.labelled_rate)
  if labelled is None or not len(labelled['image']) or rate <= 0:
    return None
  images = tf.constant(labelled['image'])
  masks = tf.constant((np.asarray(labelled['mask']) > 0).astype(np.uint8))
  count = len(labelled['image'])

  def replace(sample, seed):
    # Seeds of their own (fold_in 7), so the pseudo-anomalies stay as they are.
    s = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, 7), 2)
    use = tf.random.stateless_uniform([], s[0]) < rate
    j = tf.random.stateless_uniform([], s[1], 0, count, dtype=tf.int64)
    image = tf.cast(tf.gather(images, j), tf.float32) / 255.0
    mask = tf.cast(tf.gather(masks, j), tf.float32)
    if orient:
      image, mask = orient(seed, image, mask)
    defect = {'image': image, 'augmented': image, 'mask': mask,
              'label': tf.constant(1, tf.int32), 'real': tf.constant(1, tf.int32)}
    return tf.cond(use, lambda: defect, lambda: sample)
  return replace
