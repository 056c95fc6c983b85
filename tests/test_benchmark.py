"""benchmark.py: a sweep's grid checked up front, cells that resume, shards
that cover the grid once, failures recorded, and the table of the metrics."""

import csv
import json
import math
import os
import shutil
import signal
import time

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from conftest import assert_one_error_line, run_script, start_script, write_tree

SWEEP = """
import ml_collections
def get_config():
  c = ml_collections.ConfigDict()
  c.base = 'tiny'
  c.overrides = ml_collections.ConfigDict({{'data': {{'root': {root!r}}}}})
  c.categories = {categories!r}
  c.methods = {methods!r}
  c.method_overrides = ml_collections.ConfigDict({method_overrides!r})
  c.seeds = {seeds!r}
  c.grid = ml_collections.ConfigDict({grid!r})
  return c
"""
CATEGORIES, METHODS = ('alpha', 'beta'), ('tasad_cas', 'anoseg')
# AnoSeg's own pseudo-anomaly kind, as the installed sweeps set it.
OWN = {'anoseg': {'anomaly': {'coarse_methods': ('anoseg_hard',)}}}
STAGES = {'coarse': 'cas', 'fas': 'tasad'}
METRICS = ('image_auroc', 'pixel_auroc', 'pixel_ap', 'aupro')


def write_sweep(path, data, categories=CATEGORIES, methods=METHODS,
                seeds=(0,), grid=None, method_overrides=OWN):
  with open(path, 'w') as f:
    f.write(SWEEP.format(root=str(data), categories=tuple(categories),
                         methods=tuple(methods), seeds=tuple(seeds),
                         grid=grid or {}, method_overrides={
                             m: v for m, v in method_overrides.items()
                             if m in methods}))
  return str(path)


def bench(*args, env=None, timeout=900):
  return run_script('benchmark.py', *args, config=None, env=env,
                    timeout=timeout)


def status(root, cell):
  with open(os.path.join(root, 'benchmark', cell, 'status.json')) as f:
    return json.load(f)


def metrics(root, cell):
  with open(os.path.join(root, cell, 'eval', 'metrics.json')) as f:
    return json.load(f)


def cell_names(categories=CATEGORIES, methods=METHODS, seeds=(0,)):
  return [f'{c}/{m}/seed{s}' for c in categories for m in methods
          for s in seeds]


def dry_run(sweep, root, shard):
  result = bench(f'--sweep={sweep}', f'--root={root}', f'--shard={shard}',
                 '--dry_run')
  assert result.returncode == 0, result.stderr
  return [line.split('\t')[0] for line in result.stdout.splitlines()]


def has_checkpoint(workdir, stage='cas'):
  folder = os.path.join(workdir, 'checkpoints', stage)
  return os.path.isdir(folder) and any(
      n.isdigit() for n in os.listdir(folder))


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
  """2 categories x 2 methods x 1 seed at the tiny config, run as two shards:
  shard 1 on two fake CPU devices side by side; shard 0 killed (SIGKILL)
  once its second cell has a checkpoint, then run again."""
  base = tmp_path_factory.mktemp('benchmark')
  data = base / 'data'
  for i, name in enumerate(CATEGORIES):
    write_tree(str(data), name, seed=i)
  sweep = write_sweep(base / 'sweep.py', data)
  root = str(base / 'root')
  shards = [dry_run(sweep, root, f'{i}/2') for i in range(2)]
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             ' --xla_force_host_platform_device_count=2')
  second = bench(f'--sweep={sweep}', f'--root={root}', '--shard=1/2',
                 '--devices_per_cell=1', env=env)
  proc = start_script('benchmark.py', f'--sweep={sweep}', f'--root={root}',
                      '--shard=0/2', config=None)
  target = os.path.join(root, *shards[0][1].split('/'))
  deadline = time.time() + 600
  while not has_checkpoint(target) and proc.poll() is None:
    assert time.time() < deadline
    time.sleep(0.2)
  killed = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  rerun = bench(f'--sweep={sweep}', f'--root={root}', '--shard=0/2')
  return dict(base=base, data=data, sweep=sweep, root=root, shards=shards,
              second=second, rerun=rerun, killed=killed)


def test_shards_cover_the_grid_once(grid):
  shards = grid['shards']
  assert sorted(shards[0] + shards[1]) == sorted(cell_names())
  assert not set(shards[0]) & set(shards[1])
  assert grid['second'].returncode == 0, grid['second'].stderr
  assert grid['rerun'].returncode == 0, grid['rerun'].stderr
  for i, cells in enumerate(shards):
    for cell in cells:
      assert status(grid['root'], cell)['shard'] == [i, 2]
      assert status(grid['root'], cell)['status'] == 'done'
  # Shard 1 ran its two cells side by side, one fake CPU device each.
  assert {status(grid['root'], c)['devices'] for c in shards[1]} == {'0', '1'}


def test_killed_run_trains_only_what_was_left(grid):
  assert grid['killed'], 'shard 0 finished before it could be killed'
  root, (first, second) = grid['root'], grid['shards'][0]
  out = grid['rerun'].stdout
  assert f'{first}: done before, skipped' in out
  assert status(root, first)['attempts'] == 1
  assert status(root, second)['attempts'] == 2
  with open(os.path.join(root, 'benchmark', second, 'train.log')) as f:
    attempts = f.read().split('\n### ')
  assert len(attempts) == 3  # Before the first header, then two runs.
  assert 'resuming from step' in attempts[2], attempts[2][-3000:]
  for cell in grid['shards'][1]:  # The other shard's cells: untouched.
    assert status(root, cell)['attempts'] == 1


def test_table_is_the_cells_metrics(grid):
  root = grid['root']
  with open(os.path.join(root, 'results.csv')) as f:
    rows = {r['category']: r for r in csv.DictReader(f)}
  assert list(rows) == [*CATEGORIES, 'mean']
  for method in METHODS:
    for stage, output in STAGES.items():
      for key in METRICS:
        column = f'{method}/{stage}/{key}'
        values = [metrics(root, f'{c}/{method}/seed0')[output][key]
                  for c in CATEGORIES]
        for category, value in zip(CATEGORIES, values):
          assert float(rows[category][column]) == value  # Exactly.
          assert rows[category][column + '_n'] == '1'
        assert math.isclose(float(rows['mean'][column]), sum(values) / 2,
                            rel_tol=1e-12, abs_tol=1e-15)
      for category in CATEGORIES:
        m = metrics(root, f'{category}/{method}/seed0')
        assert math.isclose(float(rows[category][f'{method}/delta/pixel_ap']),
                            m['tasad']['pixel_ap'] - m['cas']['pixel_ap'],
                            abs_tol=1e-15)
  with open(os.path.join(root, 'results.md')) as f:
    md = f.read()
  value = metrics(root, 'beta/anoseg/seed0')['tasad']['pixel_ap']
  assert '| beta |' in md and f'{value:.4f}' in md and '| mean |' in md
  with open(os.path.join(root, 'results.html')) as f:
    page = f.read()
  assert 'data:image/png;base64,' in page and 'anoseg +FAS' in page


def test_failing_cell_is_recorded_and_the_others_finish(grid):
  """A category with corrupt images fails in train.py; the cell after it still
  runs: a copy of a finished cell without its evaluation, so that it resumes
  its training (nothing left to train) and evaluates."""
  data = grid['data']
  broken = os.path.join(data, 'broken', 'train', 'good')
  os.makedirs(broken)
  for i in range(3):
    with open(os.path.join(broken, f'{i:03d}.png'), 'wb') as f:
      f.write(b'\x89PNG\r\n\x1a\n not an image')
  for sub in ('test', 'ground_truth'):
    os.symlink(os.path.join(data, 'alpha', sub),
               os.path.join(data, 'broken', sub))
  sweep = write_sweep(grid['base'] / 'failing.py', data,
                      categories=('broken', 'alpha'), methods=('tasad_cas',))
  root = str(grid['base'] / 'failing')
  done = 'alpha/tasad_cas/seed0'
  shutil.copytree(os.path.join(grid['root'], done), os.path.join(root, done),
                  ignore=shutil.ignore_patterns('eval'))
  result = bench(f'--sweep={sweep}', f'--root={root}')
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'broken/tasad_cas/seed0' in errors[0], errors
  failed = status(root, 'broken/tasad_cas/seed0')
  assert failed['status'] == 'failed' and 'broken' in failed['error']
  assert failed['error'].startswith('train: error:'), failed['error']
  assert status(root, done)['status'] == 'done'
  assert metrics(root, done)['cas'] == metrics(grid['root'], done)['cas']
  with open(os.path.join(root, 'results.md')) as f:
    md = f.read()
  assert f'failed: broken/tasad_cas/seed0: {failed["error"]}' in md
  assert '| alpha |' in md


@pytest.mark.parametrize('change, expected', [
    (dict(grid={'train': {'learning_rat': (0.1, 0.2)}}),
     "sweep.grid.train.learning_rat: no config field 'train.learning_rat'"),
    (dict(seeds=()), 'sweep.seeds: empty'),
    (dict(grid={'train': {'cas_steps': ()}}), 'sweep.grid.train.cas_steps'),
    (dict(categories=('alpha', 'gamma')), 'sweep.categories: gamma not in'),
    (dict(methods=('tasad_cas', 'padim')), "unknown coarse method 'padim'"),
    (dict(grid={'train': {'cas_steps': (4, -1)}}), 'config.train.cas_steps'),
])
def test_bad_grid_is_refused_before_anything_runs(tmp_path, change, expected):
  data = tmp_path / 'data'
  for name in CATEGORIES:
    write_tree(str(data), name)
  sweep = write_sweep(tmp_path / 'sweep.py', data, **change)
  root = tmp_path / 'root'
  assert_one_error_line(bench(f'--sweep={sweep}', f'--root={root}'), expected)
  assert not root.exists()


def test_a_root_of_other_settings_is_refused(grid, tmp_path):
  """Rerunning into a root with different settings would mix two grids."""
  sweep = write_sweep(tmp_path / 'other.py', grid['data'],
                      grid={'train': {'cas_steps': (5,)}})
  before = status(grid['root'], 'alpha/tasad_cas/seed0')
  result = bench(f'--sweep={sweep}', f'--root={grid["root"]}', '--dry_run')
  assert result.returncode == 0  # Listing only.
  names = [l.split('\t')[0] for l in result.stdout.splitlines()]
  assert names[0] == 'alpha/tasad_cas/cas_steps=5/seed0'
  sweep = write_sweep(tmp_path / 'same.py', grid['data'],
                      method_overrides={**OWN,
                                        'tasad_cas': {'train': {'cas_steps': 5}}})
  assert_one_error_line(bench(f'--sweep={sweep}', f'--root={grid["root"]}'),
                        'this cell was run with other settings')
  assert status(grid['root'], 'alpha/tasad_cas/seed0') == before


def test_array_jobs_take_their_share_from_the_scheduler(grid):
  """The README's SLURM array and Kubernetes indexed Job: the same command in
  every task, each listing the share --shard=i/N would."""
  scheduler = {
      'slurm': {'SLURM_ARRAY_TASK_ID': '11', 'SLURM_ARRAY_TASK_MIN': '10',
                'SLURM_ARRAY_TASK_COUNT': '2'},
      'kubernetes': {'JOB_COMPLETION_INDEX': '1', 'TASAD_JAX_SHARD_COUNT': '2'},
  }
  for variables in scheduler.values():
    result = bench(f'--sweep={grid["sweep"]}', f'--root={grid["root"]}',
                   '--dry_run', env=dict(os.environ, **variables))
    assert result.returncode == 0, result.stderr
    names = [line.split('\t')[0] for line in result.stdout.splitlines()]
    assert names == grid['shards'][1]


def test_shard_from_the_scheduler():
  from tasad_jax.benchmark import runner
  slurm = {'SLURM_ARRAY_TASK_ID': '7', 'SLURM_ARRAY_TASK_MIN': '5',
           'SLURM_ARRAY_TASK_COUNT': '4'}
  assert runner.parse_shard('', slurm) == (2, 4)
  assert runner.parse_shard('', {'JOB_COMPLETION_INDEX': '3',
                                 'TASAD_JAX_SHARD_COUNT': '5'}) == (3, 5)
  assert runner.parse_shard('1/3', slurm) == (1, 3)  # The flag wins.
  assert runner.parse_shard('', {}) == (0, 1)
  for bad in ('3/3', '-1/2', 'a/b', '2'):
    with pytest.raises(runner.UserInputError, match='--shard'):
      runner.parse_shard(bad, {})
  with pytest.raises(runner.UserInputError, match='TASAD_JAX_SHARD_COUNT'):
    runner.parse_shard('', {'JOB_COMPLETION_INDEX': '0'})


def test_device_groups_pin_each_cell():
  from tasad_jax.benchmark import runner
  gpu = runner.slots(2, probe=lambda: ('gpu', 8))
  assert [s.env for s in gpu] == [
      {'CUDA_VISIBLE_DEVICES': f'{2 * i},{2 * i + 1}'} for i in range(4)]
  cpu = runner.slots(1, probe=lambda: ('cpu', 3))
  assert len(cpu) == 3 and all(
      '--xla_force_host_platform_device_count=1' in s.env['XLA_FLAGS']
      for s in cpu)
  assert len(runner.slots(0)) == 1 and runner.slots(0)[0].env == {}
  with pytest.raises(runner.UserInputError, match='more than the 2 local'):
    runner.slots(3, probe=lambda: ('gpu', 2))


HOSTILE_SWEEP = {
    'seeds': ['()', '(-1,)', "('x',)", '(0, 0)', '(1e9,)', '(0, 1)'],
    'categories': ['()', "('',)", "('..',)", "('alpha', 'alpha')", "('all',)",
                   "('alpha/beta',)"],
    'methods': ['()', "('nope',)", '(1,)', "('anoseg',)"],
    'base': ['', 'nope', '/no/such/file.py', 'tiny', 'demo'],
    'overrides.data.root': ['', '/no/such/path', ' ', 'embedded'],
}


@settings(max_examples=10, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(sorted(HOSTILE_SWEEP)), data=st.data())
def test_hostile_sweep_values_get_one_line(tmp_path_factory, field, data):
  base = tmp_path_factory.mktemp('hostile_sweep')
  for name in CATEGORIES:
    write_tree(str(base / 'data'), name)
  sweep = write_sweep(base / 'sweep.py', base / 'data')
  value = data.draw(st.sampled_from(HOSTILE_SWEEP[field]))
  root = base / 'root'
  result = bench(f'--sweep={sweep}', f'--root={root}', f'--sweep.{field}={value}',
                 '--dry_run')
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  if result.returncode:
    assert_one_error_line(result, '')
  else:
    assert result.stdout.count('\t') >= 1
  assert not root.exists()
