"""Shared fixtures: a private cache directory and small MVTec-layout trees."""

import os
import tempfile

# Before anything imports the package: keep the embedded dataset and the SLIC
# cache of this test session out of the user's cache, and TensorFlow quiet.
# pytest-xdist's workers inherit the controller's environment: one cache (and
# one embedded dataset, one XLA cache, one tiny workdir) for the whole session.
if 'TASAD_JAX_TEST_CACHE' not in os.environ:
  os.environ['TASAD_JAX_TEST_CACHE'] = tempfile.mkdtemp(
      prefix='tasad_jax_test_cache_')
os.environ['TASAD_JAX_CACHE'] = os.environ['TASAD_JAX_TEST_CACHE']
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Tests compile the same tiny programs many times, also in subprocesses: share
# XLA's persistent compilation cache between them.
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(
    os.environ['TASAD_JAX_CACHE'], 'xla')
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'

# The tests' programs are tiny: XLA:CPU's compile time dominates, and LLVM at
# -O1 compiles them in about half the time of the default, with the same
# results to float round-off.
XLA_TEST_FLAGS = '--xla_backend_optimization_level=1'
os.environ['XLA_FLAGS'] = ' '.join(
    f for f in (os.environ.get('XLA_FLAGS', ''), XLA_TEST_FLAGS) if f)

import fcntl  # pylint: disable=g-import-not-at-top
import json
import shutil
import subprocess
import time

import numpy as np
from PIL import Image
import pytest

import prefork

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Entry points run forked from a pre-imported Python (prefork.py): the same
# processes as `python script.py ...`, without ~5.5 CPU-s of imports each.
LAUNCHER = prefork.Launcher()


def pytest_sessionfinish(session):
  del session
  LAUNCHER.close()


# The files that take longest (`pytest --durations=0`, seconds summed per
# file), heaviest first: handed out first to the `-n 2 --dist loadfile`
# workers, they do not end the run alone. Order only; the list need not be
# complete (files not in it follow, in collection order).
# test_method_contract.py comes after each method's own file: it reads
# their `method_runs` workdirs instead of waiting on a run in progress.
HEAVY_FIRST = ('test_benchmark.py', 'test_multihost.py', 'test_train.py',
               'test_tiling.py', 'test_deploy_exports.py', 'test_bench.py',
               'test_draem.py',
               'test_methods.py', 'test_anoseg.py', 'test_cavga.py',
               'test_reliability.py', 'test_checkpoint_integrity.py',
               'test_method_contract.py')


def pytest_configure(config):
  # pytest-xdist (>= 3.6) reorders loadfile's files by their number of
  # tests unless told not to, which would undo HEAVY_FIRST: a file of a few
  # slow tests would start last and end the run alone.
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.fspath))
    return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)
  items.sort(key=rank)  # Stable: the tests of a file keep their order.


def start_script(script, *args, config='tiny.py', env=None):
  """Starts a repository entry point (train.py, evaluate.py, ...) with a
  config (None: no --config flag); a Popen-like handle with text output."""
  argv = [os.path.join(REPO, script), *args]
  if config:
    argv.insert(1, f'--config={os.path.join(REPO, "configs", config)}')
  return LAUNCHER.start(argv, REPO, env)


def run_script(script, *args, config='tiny.py', env=None, timeout=300):
  """Runs `start_script(...)` to its end: a CompletedProcess."""
  proc = start_script(script, *args, config=config, env=env)
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess([script, *args], proc.returncode, out, err)


def assert_one_error_line(result, expected):
  """A finished entry point refused its input: exit status 2, no traceback,
  and exactly one 'error:' line, which contains `expected`."""
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and expected in lines[0], result.stderr


def write_tree(root, category='widget', seed=0):
  """Writes a small MVTec-layout category with the quirks of real folders.

  Grey JPEG train images of odd sizes, RGB PNG test images, masks of 0/255,
  a BMP and a TIFF, and a stray non-image file that must be ignored.

  Returns:
    A dict of what was written: {'train': n, 'good': n, 'defects': {type: n}}.
  """
  rng = np.random.default_rng(seed)
  base = os.path.join(root, category)

  def image(h, w, channels):
    shape = (h, w) if channels == 1 else (h, w, channels)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))

  os.makedirs(os.path.join(base, 'train', 'good'))
  for i, (h, w) in enumerate([(37, 51), (64, 64), (50, 33), (41, 41)]):
    image(h, w, 1).save(os.path.join(base, 'train', 'good', f'{i:03d}.jpg'))
  image(40, 40, 3).save(os.path.join(base, 'train', 'good', '004.bmp'))
  with open(os.path.join(base, 'train', 'good', 'notes.txt'), 'w') as f:
    f.write('not an image')
  os.makedirs(os.path.join(base, 'test', 'good'))
  for i in range(2):
    image(48, 48, 3).save(os.path.join(base, 'test', 'good', f'{i:03d}.png'))
  defects = {'crack': 2, 'hole': 1}
  for defect, count in defects.items():
    os.makedirs(os.path.join(base, 'test', defect))
    os.makedirs(os.path.join(base, 'ground_truth', defect))
    for i in range(count):
      ext = '.tif' if defect == 'hole' else '.png'
      image(60, 45, 3).save(os.path.join(base, 'test', defect, f'{i:03d}{ext}'))
      mask = np.zeros((60, 45), np.uint8)
      mask[10 + i:30, 5:20 + i] = 255
      Image.fromarray(mask).save(
          os.path.join(base, 'ground_truth', defect, f'{i:03d}_mask.png'))
  return {'train': 5, 'good': 2, 'defects': defects}


@pytest.fixture
def mvtec_tree(tmp_path):
  """A written category 'widget' under tmp_path; returns (root, info)."""
  root = str(tmp_path / 'mvtec')
  return root, write_tree(root)


def shared_workdir(name, train_fn):
  """A workdir trained once per test session, whichever worker asks first.

  `train_fn(path)` trains it; the other pytest-xdist workers wait on a file
  lock and read the finished workdir. Read it; a test that damages or extends
  it copies it first.
  """
  path = os.path.join(os.environ['TASAD_JAX_CACHE'], 'workdirs', name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(path + '.done'):
      shutil.rmtree(path, ignore_errors=True)
      train_fn(path)
      open(path + '.done', 'w').close()
  return path


@pytest.fixture(scope='session')
def tiny_workdir():
  """A workdir trained once per session with configs/tiny.py (both stages,
  thresholds)."""
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  from tasad_jax.training import trainer  # pylint: disable=g-import-not-at-top
  return shared_workdir(
      'tiny', lambda path: trainer.train_and_evaluate(tiny.get_config(), path))


@pytest.fixture(scope='session')
def tiny_seeded(tiny_workdir):
  """A copy of the tiny workdir whose test seed threshold (10/255) leaves
  seeds in its coarse maps of random images (at 30 it finds none), so that
  its fine stage keeps superpixels: for exports that must show SLIC."""
  def copy(path):
    shutil.copytree(tiny_workdir, path, ignore=shutil.ignore_patterns('eval'))
    with open(os.path.join(path, 'config.json')) as f:
      saved = json.load(f)
    saved['refine']['test_seed_threshold'] = 10
    with open(os.path.join(path, 'config.json'), 'w') as f:
      json.dump(saved, f)
  return shared_workdir('tiny_seeded', copy)


@pytest.fixture(scope='session')
def tiny_onnx(tiny_seeded):
  """`tiny_seeded`'s program exported to ONNX once per session (a conversion
  takes about a minute): the file's path."""
  from tasad_jax.deploy import export  # pylint: disable=g-import-not-at-top

  def write(path):
    os.makedirs(path)
    export.export(tiny_seeded, os.path.join(path, 'model.onnx'), 'onnx')
  return os.path.join(shared_workdir('tiny_onnx', write), 'model.onnx')


@pytest.fixture(scope='session')
def tiny_evaluated(tiny_workdir):
  """A copy of the tiny workdir with `evaluate.py`'s outputs (eval/), made
  once per session."""
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  from tasad_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  def evaluate_copy(path):
    shutil.copytree(tiny_workdir, path)
    config = tiny.get_config()
    evaluate.evaluate(config, path, [config.data.category])
  return shared_workdir('tiny_evaluated', evaluate_copy)


@pytest.fixture
def tiny_config():
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  return tiny.get_config()


def write_easy_tree(root, category='plain', size=32, seed=0):
  """A category a few training steps can learn: flat grey parts with faint
  noise; the defects are dark disks (about 8% of the image).

  Returns:
    The positive pixel rate of the test split (the pixel AP of a random map).
  """
  rng = np.random.default_rng(seed)
  base = os.path.join(root, category)
  yy, xx = np.mgrid[:size, :size]

  def part():
    return np.clip(128 + rng.normal(0, 4, (size, size)), 0, 255)

  def save(array, *path):
    os.makedirs(os.path.join(base, *path[:-1]), exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(os.path.join(base, *path))

  for i in range(12):
    save(part(), 'train', 'good', f'{i:03d}.png')
  for i in range(4):
    save(part(), 'test', 'good', f'{i:03d}.png')
  positive = 0
  for i in range(4):
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2
    image = part()
    image[disk] = 30
    save(image, 'test', 'hole', f'{i:03d}.png')
    save(disk * 255, 'ground_truth', 'hole', f'{i:03d}_mask.png')
    positive += disk.sum()
  return positive / (8 * size * size)


def copy_in_mode(trained, workdir, mode, whole_image_pixels=None, **model):
  """A copy of the `trained` workdir (without its eval) whose saved config
  infers in resize `mode`, with these `whole_image_pixels` (None: as saved)
  and config.model fields: the same weights in another mode."""
  shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns('eval'))
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  saved['data']['resize'] = mode
  if whole_image_pixels is not None:
    saved['data']['whole_image_pixels'] = whole_image_pixels
  saved['model'].update(model)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(saved, f)
  return workdir


def exported_stablehlo(model, tmp_path):
  """`model` (a predictor) exported to StableHLO and loaded back."""
  import jax  # pylint: disable=g-import-not-at-top
  from tasad_jax.deploy import export  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'model.stablehlo')
  export.export_stablehlo(model, path)
  with open(path, 'rb') as f:
    return jax.export.deserialize(f.read())


def train_steps(method, state, batch, steps):
  """`steps` jitted steps of `method` on one numpy batch, each checked finite.

  Returns:
    (the state after them, the metrics of each step as floats).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from tasad_jax.core import sharding, stage  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  program_at = stage.compile_phases(method, state, mesh)
  batch = sharding.to_global(batch, mesh)
  history = []
  with jax.set_mesh(mesh):
    for i in range(steps):
      state, m, finite = program_at(int(state.step))(state, batch, None)
      assert bool(finite), f'step {i} not finite'
      history.append({k: float(v) for k, v in m.items()})
  return state, history


def lock_holder(workdir):
  """The pid written in `workdir`'s run lock ('' when there is none): a run
  writes it once it has imported everything and taken the workdir."""
  from tasad_jax.runtime import preemption  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(workdir, preemption.LOCK_NAME)) as f:
      return f.read().strip()
  except OSError:
    return ''


def wait_for(predicate, timeout=240):
  """Polls `predicate` until it holds (True) or `timeout` seconds pass (False)."""
  end = time.time() + timeout
  while time.time() < end:
    if predicate():
      return True
    time.sleep(0.01)
  return False
