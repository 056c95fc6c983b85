"""predict.py, export.py and evaluate.py as a hostile user meets them:
colliding names, rotated photos, signals, disks that fill, wrong thresholds,
locked workdirs; each either works or ends in one line, writing nothing half."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import run_script, start_script, wait_for
import tasad_jax
from tasad_jax.data import imageio
from tasad_jax.runtime import preemption
from tasad_jax.runtime.errors import UserInputError
from test_refusals import assert_refused, snapshot


def _photos(folder, names, rng, size=(36, 44)):
  for name in names:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(path)


def _predict(workdir, inputs, output, *extra):
  return run_script('predict.py', f'--workdir={workdir}', f'--input={inputs}',
                    f'--output={output}', *extra, config=None)


def test_outputs_never_collide_and_rotated_photos_are_upright(tiny_workdir,
                                                              tmp_path):
  rng = np.random.default_rng(0)
  photos = tmp_path / 'photos'
  _photos(photos, ['x.png', 'x.jpg', 'a/b.png', 'a__b.png'], rng)
  stored = np.zeros((30, 50, 3), np.uint8)  # Shown 50 high, 30 wide.
  image = Image.fromarray(stored)
  exif = image.getexif()
  exif[imageio.ORIENTATION] = 6
  image.save(photos / 'phone.jpg', exif=exif)
  out = tmp_path / 'out'
  result = _predict(tiny_workdir, photos, out)
  assert result.returncode == 0, result.stderr[-2000:]
  heat = sorted(os.path.relpath(os.path.join(d, f), out / 'heatmaps')
                for d, _, files in os.walk(out / 'heatmaps') for f in files)
  assert heat == ['a/b.png.png', 'a__b.png.png', 'phone.jpg.png', 'x.jpg.png',
                  'x.png.png']
  assert Image.open(out / 'masks' / 'phone.jpg.png').size == (30, 50)
  index = (out / 'index.html').read_text(encoding='utf-8')
  assert 'heatmaps/a/b.png.png' in index and 'heatmaps/a__b.png.png' in index
  assert imageio.read_image(str(photos / 'phone.jpg')).shape == (50, 30, 3)


@pytest.mark.parametrize('sig,status', [(signal.SIGINT, 130),
                                        (signal.SIGTERM, 143)])
def test_a_stopped_predict_leaves_the_previous_output(tiny_workdir, tmp_path,
                                                      sig, status):
  rng = np.random.default_rng(1)
  photos = tmp_path / 'photos'
  _photos(photos, [f'{i:03d}.png' for i in range(400)], rng)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'scores.csv').write_text('path,score,decision,error\n')
  before = snapshot(out)
  run = start_script('predict.py', f'--workdir={tiny_workdir}',
                     f'--input={photos}', f'--output={out}', '--batch_size=4',
                     config=None)
  building = lambda: any(n.startswith('.out-') for n in os.listdir(tmp_path))
  assert wait_for(building), run.communicate()
  run.send_signal(sig)
  _, err = run.communicate(timeout=120)
  assert run.returncode == status, err[-2000:]
  assert 'Traceback' not in err
  assert [l for l in err.splitlines() if l.startswith('stopped:')], err[-2000:]
  assert snapshot(out) == before
  assert sorted(os.listdir(tmp_path)) == ['out', 'photos']


# A command whose stop signal arrives while a finaliser runs: Python raises
# the stop there, prints it as ignored and goes on.
_STOPPED_IN_A_FINALISER = """
import signal, sys, time
from tasad_jax.runtime import errors
signal.signal(signal.SIGINT, signal.default_int_handler)  # Whatever the
# test worker left: a fresh Python's Ctrl-C.
class Finalised:
  def __del__(self):
    signal.raise_signal(getattr(signal, sys.argv[1]))
    for _ in range(10):
      pass
def main(argv):
  Finalised()
  time.sleep(2)
  print('finished', file=sys.stderr)
errors.cli_main(main)(['command'])
"""


@pytest.mark.parametrize('sig,status', [('SIGINT', 130), ('SIGTERM', 143)])
def test_a_stop_raised_inside_a_finaliser_still_stops(sig, status):
  result = subprocess.run([sys.executable, '-c', _STOPPED_IN_A_FINALISER, sig],
                          capture_output=True, text=True, timeout=60,
                          check=False)
  assert result.returncode == status, result.stderr
  assert 'finished' not in result.stderr
  assert [l for l in result.stderr.splitlines() if l.startswith('stopped:')]


def test_full_and_read_only_disks_are_one_line(tiny_workdir, tmp_path):
  small = tmp_path / 'small'
  small.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs',
                            str(small)], capture_output=True)
  if mounted.returncode:
    pytest.skip('cannot mount a small tmpfs here (not root?)')
  try:
    rng = np.random.default_rng(2)
    photos = tmp_path / 'photos'
    _photos(photos, [f'{i}.png' for i in range(12)], rng, size=(80, 80))
    result = _predict(tiny_workdir, photos, small / 'out')
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    assert len(lines) == 1 and 'No space left' in lines[0], result.stderr
    assert os.listdir(small) == []
    subprocess.run(['mount', '-o', 'remount,ro', str(small)], check=True)
    for script, args in (
        ('predict.py', [f'--input={photos}', f'--output={small / "out"}']),
        ('export.py', [f'--output={small / "m.stablehlo"}'])):
      assert_refused(run_script(script, f'--workdir={tiny_workdir}', *args,
                                config=None), 'cannot be written')
  finally:
    subprocess.run(['umount', str(small)], check=False)


def test_outputs_that_cannot_be_made_are_refused_before_work(tiny_workdir,
                                                            tmp_path):
  (tmp_path / 'file').write_text('')
  (tmp_path / 'folder').mkdir()
  (tmp_path / 'folder' / 'mine.txt').write_text('keep')
  photos = tmp_path / 'photos'
  _photos(photos, ['x.png'], np.random.default_rng(3))
  for script, args, expected in (
      ('predict.py', [f'--input={photos}', f'--output={tmp_path / "file" / "o"}'],
       'is a file'),
      ('predict.py', [f'--input={photos}', f'--output={tmp_path / "folder"}'],
       'folder of other files'),
      ('predict.py', [f'--input={photos}', f'--output={tmp_path / "o"}',
                      '--batch_size=0'], 'batch_size'),
      ('export.py', [f'--output={tmp_path / "folder"}'], 'is a folder'),
      ('export.py', [f'--output={tmp_path / "m.stablehlo"}',
                     '--superpixels_input'], 'for --format=onnx or tflite'),
      ('validation_split.py', [f'--output={tmp_path / "file"}'],
       'not a folder')):
    extra = {} if script == 'validation_split.py' else {'config': None}
    workdir = [] if script == 'validation_split.py' else [
        f'--workdir={tiny_workdir}']
    assert_refused(run_script(script, *workdir, *args, **extra), expected)
  assert (tmp_path / 'folder' / 'mine.txt').read_text() == 'keep'


def test_thresholds_belong_to_the_scored_output(tiny_workdir, tmp_path):
  """Without the FAS checkpoint the coarse stage is scored against its own
  thresholds and predict says so; a damaged thresholds.json is one line."""
  copy = tmp_path / 'cas_only'
  shutil.copytree(tiny_workdir, copy, ignore=shutil.ignore_patterns('fas'))
  model = tasad_jax.load(str(copy))
  with open(copy / 'thresholds.json') as f:
    saved = json.load(f)
  assert model.method == 'cas'
  assert model.thresholds['image'] == saved['per_method']['cas']['image']
  assert model.thresholds['image'] != saved['image']  # The coarse+FAS one.
  assert 'no FAS checkpoint' in model.warnings[0]
  with pytest.raises(UserInputError, match='NaN'):
    model.predict(np.full((20, 20, 3), np.nan, np.float32))
  photos = tmp_path / 'photos'
  _photos(photos, ['x.png'], np.random.default_rng(4))
  result = _predict(copy, photos, tmp_path / 'out')
  assert result.returncode == 0 and 'warning:' in result.stderr
  (copy / 'thresholds.json').write_text('{"image": ')
  for script, args in (('predict.py', [f'--input={photos}',
                                       f'--output={tmp_path / "o2"}']),
                       ('export.py', [f'--output={tmp_path / "m"}'])):
    assert_refused(run_script(script, f'--workdir={copy}', *args, config=None),
                   'thresholds.json: unreadable thresholds')


def test_nothing_scored_is_a_failure(tiny_workdir, tmp_path):
  photos = tmp_path / 'photos'
  photos.mkdir()
  (photos / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnope')
  result = _predict(tiny_workdir, photos, tmp_path / 'out')
  assert_refused(result, 'no image could be scored')
  assert (tmp_path / 'out' / 'scores.csv').exists()  # Which file, and why.


def test_evaluate_refuses_a_workdir_in_training(tiny_evaluated, tmp_path):
  copy = str(tmp_path / 'w')
  shutil.copytree(tiny_evaluated, copy)
  with preemption.WorkdirLock(copy):
    before = snapshot(copy)
    assert_refused(run_script('evaluate.py', f'--workdir={copy}'),
                   'while_training=True')
    assert snapshot(copy) == before
    done = run_script('evaluate.py', f'--workdir={copy}',
                      '--config.eval.while_training=True')
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_full_disk_during_training_is_one_line(tmp_path):
  small = tmp_path / 'small'
  small.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=600k', 'tmpfs',
                     str(small)], capture_output=True).returncode:
    pytest.skip('cannot mount a small tmpfs here (not root?)')
  try:
    result = run_script('train.py', f'--workdir={small / "w"}')
  finally:
    subprocess.run(['umount', str(small)], check=False)
  assert result.returncode == 1 and 'Traceback' not in result.stderr, (
      result.stderr[-3000:])
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'No space left on device' in lines[0]
  assert 'run the same command to resume' in lines[0]


def test_images_above_the_pixel_limit_are_one_line(tmp_path, monkeypatch):
  path = str(tmp_path / 'wide.png')
  Image.fromarray(np.zeros((20, 60, 3), np.uint8)).save(path)
  assert imageio.read_image(path).shape == (20, 60, 3)
  monkeypatch.setattr(imageio, 'MAX_PIXELS', 1000)
  with pytest.raises(UserInputError, match='60x20 is 0 megapixels, above'):
    imageio.read_image(path)
