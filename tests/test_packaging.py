"""Installed like a library: a wheel holds the configs and console scripts,
and a console script runs from any folder with an installed config's name."""

import os
import shutil
import site
import subprocess
import sys

from conftest import REPO
from tasad_jax.config import presets
from tasad_jax.config.presets import sweeps

SCRIPTS = ('tasad-train', 'tasad-evaluate', 'tasad-predict', 'tasad-export',
           'tasad-validation-split', 'tasad-benchmark')


def _run(*args, **kwargs):
  return subprocess.run(args, capture_output=True, text=True, timeout=300,
                        **kwargs)


def test_a_wheel_installs_console_scripts_that_take_config_names(tmp_path):
  """The wheel is built from a copy of the source (nothing written into the
  repository) and installed without dependencies into a new venv that sees
  this environment's packages; its script runs from an empty folder."""
  source = tmp_path / 'src'
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
      '.git', '.venv', 'workdirs', '*.egg-info', 'build', '__pycache__'))
  built = _run(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
               '--no-build-isolation', str(source), '-w', str(tmp_path / 'dist'))
  assert built.returncode == 0, built.stderr[-2000:]
  wheel, = (tmp_path / 'dist').glob('tasad_jax-*.whl')
  venv = tmp_path / 'venv'
  assert _run(sys.executable, '-m', 'venv', '--without-pip',
              str(venv)).returncode == 0
  python = str(venv / 'bin' / 'python')
  target = _run(python, '-c', 'import site; print(site.getsitepackages()[0])')
  with open(os.path.join(target.stdout.strip(), 'deps.pth'), 'w') as f:
    f.write('\n'.join(site.getsitepackages()) + '\n')
  installed = _run(sys.executable, '-m', 'pip', '--python', python, 'install',
                   '-q', '--no-deps', str(wheel))
  assert installed.returncode == 0, installed.stderr[-2000:]
  for script in SCRIPTS:
    assert (venv / 'bin' / script).exists(), script
  empty = tmp_path / 'elsewhere'
  empty.mkdir()
  where = _run(python, '-c', 'import tasad_jax.config.presets as p; '
               'print(p.FOLDER, *(n for n in p.NAMES if p.path(n)))', cwd=empty)
  folder, *names = where.stdout.split()
  assert folder.startswith(str(venv)) and names == list(presets.NAMES)
  assert all(os.path.exists(os.path.join(folder, f'{n}.py')) for n in names)
  missing = str(empty / 'no_workdir')
  result = _run(str(venv / 'bin' / 'tasad-evaluate'), '--config=demo',
                f'--workdir={missing}', cwd=empty,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert result.returncode == 2 and errors == [
      f'error: {missing}: workdir not found'], result.stderr[-2000:]
  result = _run(str(venv / 'bin' / 'tasad-benchmark'), '--sweep=demo_methods',
                f'--root={empty / "runs"}', '--dry_run', cwd=empty)
  cells = [l.split('\t') for l in result.stdout.splitlines()]
  assert result.returncode == 0 and [c[0] for c in cells] == [
      f'brick/{m}/seed0' for m in sweeps.METHODS], result.stderr[-2000:]
  assert all(c[1].startswith('--config=demo ') for c in cells)
  result = _run(str(venv / 'bin' / 'tasad-train'), '--config=no_such_config',
                f'--workdir={missing}', cwd=empty)
  assert result.returncode == 2 and 'cannot load the config file' in (
      result.stderr), result.stderr[-2000:]
