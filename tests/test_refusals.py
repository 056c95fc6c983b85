"""A refused run changes nothing: one `error:` line, exit status != 0, no
traceback, and a trained workdir byte-identical afterwards; random hostile
config overrides to every entry point included."""

import hashlib
import json
import os
import shutil

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from conftest import run_script
from tasad_jax.config.presets import tiny


def snapshot(folder) -> dict[str, str]:
  """Relative path -> SHA-256 of every file below `folder` (and the folders)."""
  out = {}
  for d, dirs, files in os.walk(folder):
    for name in dirs:
      out[os.path.relpath(os.path.join(d, name), folder) + '/'] = ''
    for name in files:
      path = os.path.join(d, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def assert_refused(result, expected=''):
  """Exit status != 0, no traceback, every stderr problem an `error:` line."""
  assert result.returncode != 0, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert lines and expected in ' '.join(lines), result.stderr[-2000:]


@pytest.fixture
def trained_copy(tiny_workdir, tmp_path):
  copy = str(tmp_path / 'trained')
  shutil.copytree(tiny_workdir, copy)
  return copy


@pytest.mark.parametrize('args,expected', [
    (['--config.data.root=/no/such/root'], '/no/such/root'),
    (['--config.model.width=8'], 'config.model.width: 8, but'),
    (['--config.anomaly.source=/no/such/textures'], '/no/such/textures'),
    (['--config.train.checkpoint_every=0'], 'config.train.checkpoint_every'),
    (['--config.refine.n_segments=-1'], 'config.refine.n_segments'),
    (["--config.anomaly.colour_ops=('gamma','sepia')"], 'config.anomaly.colour_ops'),
])
def test_a_refused_rerun_leaves_the_trained_workdir_as_it_was(
    trained_copy, args, expected):
  before = snapshot(trained_copy)
  assert_refused(run_script('train.py', f'--workdir={trained_copy}', *args),
                 expected)
  assert snapshot(trained_copy) == before


def test_a_refused_new_run_makes_no_workdir(tmp_path):
  workdir = tmp_path / 'new' / 'run'
  assert_refused(run_script('train.py', f'--workdir={workdir}',
                            '--config.anomaly.source=/no/such/textures'),
                 '/no/such/textures')
  assert not (tmp_path / 'new').exists()


def test_the_local_launcher_refuses_more_processes_than_the_machine_holds(
    tmp_path):
  """A mistyped process count is refused before one process starts (each
  holds a JAX runtime: a trillion of them filled the machine's memory)."""
  workdir = tmp_path / 'new' / 'run'
  assert_refused(run_script('train.py', f'--workdir={workdir}',
                            '--config.distributed.num_processes=1000000000000'),
                 'config.distributed.num_processes')
  assert not (tmp_path / 'new').exists()


def _leaves(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


FIELDS = sorted(_leaves(tiny.get_config().to_dict()))


def _hostile(value) -> st.SearchStrategy:
  """Flag values of the field's type that a user might mistype."""
  if isinstance(value, bool):
    return st.sampled_from(['True', 'False'])
  if isinstance(value, int):
    return st.sampled_from(['-1', '0', '-1000000000', '1000000000000'])
  if isinstance(value, float):
    return st.sampled_from(['-1.0', '0.0', 'nan', 'inf', '1e30', '-1e-30'])
  if isinstance(value, str):
    return st.sampled_from(['', 'nope', '/no/such/path', ' '])
  return st.sampled_from(['()', "('x',)", '(-1, -2)', '(1e9,)', '(0,)'])


@st.composite
def overrides(draw):
  path, value = draw(st.sampled_from(FIELDS))
  return f'--config.{path}={draw(_hostile(value))}'


def _check_refused_or_done(result, workdir, before):
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  if result.returncode != 0:
    assert_refused(result)
    assert snapshot(workdir) == before, result.stderr[-2000:]


# Few examples, always the same ones: each is a run of an entry point.
HOSTILE = settings(max_examples=8, derandomize=True, deadline=None,
                   suppress_health_check=list(HealthCheck))


@HOSTILE
@given(flag=overrides())
def test_hostile_overrides_to_train_and_evaluate(tiny_workdir, tmp_path_factory,
                                                 flag):
  copy = str(tmp_path_factory.mktemp('hostile') / 'trained')
  shutil.copytree(tiny_workdir, copy)
  before = snapshot(copy)
  for script in ('train.py', 'evaluate.py'):
    result = run_script(script, f'--workdir={copy}', flag)
    _check_refused_or_done(result, copy, before)
    if result.returncode == 0:
      return  # It ran (and may have written); nothing to compare.


@HOSTILE
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_hostile_saved_configs_to_predict_and_export(tiny_workdir,
                                                     tmp_path_factory, field,
                                                     data):
  """A damaged config.json: each field replaced by a value of another kind."""
  path, value = field
  bad = data.draw(st.sampled_from([None, 'text', -1, [], {'x': 1}]))
  folder = tmp_path_factory.mktemp('saved')
  copy = str(folder / 'trained')
  shutil.copytree(tiny_workdir, copy, ignore=shutil.ignore_patterns('eval'))
  with open(os.path.join(copy, 'config.json')) as f:
    saved = json.load(f)
  section = saved
  for key in path.split('.')[:-1]:
    section = section[key]
  section[path.split('.')[-1]] = bad
  with open(os.path.join(copy, 'config.json'), 'w') as f:
    json.dump(saved, f)
  before = snapshot(copy)
  images = folder / 'images'
  images.mkdir()
  shutil.copy(os.path.join(os.path.dirname(__file__), '..', 'docs',
                           'demo_heatmap_crack.png'), images / 'x.png')
  for script, args in (('predict.py', [f'--input={images}',
                                       f'--output={folder / "out"}']),
                       ('export.py', [f'--output={folder / "m.stablehlo"}'])):
    result = run_script(script, f'--workdir={copy}', *args, config=None)
    _check_refused_or_done(result, copy, before)
