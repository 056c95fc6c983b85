"""Every benchmark runs at a tiny size and prints parseable JSON lines.

Speed targets live in bench/ (BENCHMARKS.md), never in timed tests; this test
only keeps each script working as the code under it changes.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, write_tree

# Tiny arguments of each bench script; a new script must be added here.
TINY_ARGS = {
    'accelerator.py': ['--width', '4', '--size', '32', '--dtype', 'float32',
                       '--batches', '2', '--peak_size', '128',
                       '--warmup', '1', '--repeats', '1'],
    'input_pipeline.py': ['--size', '32', '--batch', '4', '--batches', '2',
                          '--warmup', '1'],
    'metrics.py': ['--images', '6', '--size', '32'],
    'inference.py': ['--sizes', 'tiny', '--batch', '2', '--repeats', '1'],
    'superpixels.py': ['--root', '{root}', '--category', 'widget', '--size',
                       '32', '--images', '2', '--n_segments', '20'],
    'tiling.py': ['--height', '200', '--width', '120', '--tile', '32',
                  '--batches', '2', '8'],
    'predict_memory.py': ['--sizes', '90x70', '--workdir', '{workdir}'],
    'line_speed.py': ['--images', '3', '--size', '40x50', '--jitter', '0.3',
                      '--workdir', '{workdir}'],
    'segmenter_options.py': ['--bases', '4', '--size', '32'],
    'runtimes.py': ['--workdir', '{seeded}', '--onnx', '{onnx}', '--batches',
                    '1', '2', '--repeats', '1'],
}
HELPERS = {'timing.py', 'torch_reference.py', 'workdirs.py'}  # Imported by the benches, not run.
# Run with TensorFlow, tfds and clu made unimportable: the accelerator image
# has none of them (BENCHMARKS.md), so the model benches must not need them.
WITHOUT_TENSORFLOW = {'accelerator.py', 'inference.py',
                      'metrics.py', 'tiling.py', 'segmenter_options.py'}
BLOCKER = '''import sys
class _Block:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'clu'):
      raise ImportError('not on the accelerator image: ' + name)
sys.meta_path.insert(0, _Block())
'''


def test_every_bench_has_tiny_arguments():
  scripts = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, 'bench', '*.py'))}
  assert scripts - HELPERS == set(TINY_ARGS)


@pytest.mark.parametrize('script', sorted(TINY_ARGS))
def test_bench_runs_at_tiny_size(script, tmp_path, request):
  root = str(tmp_path / 'data')
  write_tree(root, 'widget')
  workdir = (request.getfixturevalue('tiny_workdir')
             if any('{workdir}' in a for a in TINY_ARGS[script]) else '')
  onnx, seeded = ((request.getfixturevalue('tiny_onnx'),
                    request.getfixturevalue('tiny_seeded'))
                   if any('{onnx}' in a for a in TINY_ARGS[script])
                   else ('', ''))
  args = [a.format(root=root, workdir=workdir, onnx=onnx, seeded=seeded)
          for a in TINY_ARGS[script]]
  env = dict(os.environ)
  if script in WITHOUT_TENSORFLOW:
    (tmp_path / 'site').mkdir()
    (tmp_path / 'site' / 'sitecustomize.py').write_text(BLOCKER)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(tmp_path / 'site'), env.get('PYTHONPATH', '')])
  result = subprocess.run([sys.executable, os.path.join(REPO, 'bench', script),
                           *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300, check=False, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith('{')]
  assert lines and all('bench' in l for l in lines)
  for line in lines:  # Every figure is a finite number or a label.
    for value in line.values():
      assert not (isinstance(value, float) and value != value), line
