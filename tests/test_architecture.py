"""The package's import graph: no cycles, and layers that import one way."""

import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, 'tasad_jax')
GENERIC = ('tasad_jax.core.train_state', 'tasad_jax.core.stage', 'tasad_jax.core.sharding',
           'tasad_jax.runtime.checkpointing', 'tasad_jax.core.losses', 'tasad_jax.models.segmenter',
           'tasad_jax.core.scoring', 'tasad_jax.fine.selection', 'tasad_jax.fine.slic',
           'tasad_jax.core.metrics', 'tasad_jax.runtime.fileio', 'tasad_jax.runtime.errors',
           'tasad_jax.core.tiling')
ABOVE_METHODS = ('tasad_jax.fine.fas', 'tasad_jax.training.trainer', 'tasad_jax.inference.two_stage',
                 'tasad_jax.evaluation.evaluate', 'tasad_jax.inference.predictor',
                 'tasad_jax.deploy.export', 'tasad_jax.inference.whole_image')


def _modules() -> dict[str, str]:
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        found['.'.join(parts)] = path
  return found


def import_graph() -> dict[str, set[str]]:
  """Module -> the package modules it imports (anywhere in its body)."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        names = [f'{node.module}.{a.name}' for a in node.names]
        if any(n not in modules for n in names):  # A name of the module itself.
          names.append(node.module)
      else:
        continue
      edges |= {n for n in names if n in modules and n != 'tasad_jax'}
    graph[module] = edges - {module}
  return graph


def _reachable(graph, start):
  seen, todo = set(), [start]
  while todo:
    for nxt in graph[todo.pop()]:
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_no_import_cycle():
  graph = import_graph()
  assert len(graph) > 30
  cycles = [m for m in graph if m in _reachable(graph, m)]
  assert not cycles, f'modules on an import cycle: {sorted(cycles)}'


def test_layers_import_one_way():
  graph = import_graph()
  for module in GENERIC:
    below = _reachable(graph, module)
    wrong = {m for m in below if m.startswith('tasad_jax.methods')
             or m in ABOVE_METHODS}
    assert not wrong, f'{module} (generic) imports {sorted(wrong)}'
  for module in graph:
    if module.startswith('tasad_jax.methods'):
      wrong = _reachable(graph, module) & set(ABOVE_METHODS)
      assert not wrong, f'{module} (a method) imports {sorted(wrong)}'


def test_the_checker_finds_a_cycle(tmp_path, monkeypatch):
  """The graph is real: a planted cycle between two modules is found."""
  graph = import_graph()
  graph['tasad_jax.core.losses'] = graph['tasad_jax.core.losses'] | {'tasad_jax.training.trainer'}
  cycles = [m for m in graph if m in _reachable(graph, m)]
  assert 'tasad_jax.core.losses' in cycles and 'tasad_jax.training.trainer' in cycles


def test_entry_points_import_tensorflow_only_when_used():
  """Loading an entry point (before any work) imports no TensorFlow: a bad
  flag, a refused workdir or a launcher of processes costs no TF import."""
  code = '\n'.join([
      'import importlib.util, os, sys',
      'from absl import flags',
      'sys.path.insert(0, os.getcwd())',
      'for script in ("train", "evaluate", "predict", "export", '
      '"validation_split"):',
      '  before = set(flags.FLAGS)',
      '  spec = importlib.util.spec_from_file_location(script, script + ".py")',
      '  spec.loader.exec_module(importlib.util.module_from_spec(spec))',
      '  for name in set(flags.FLAGS) - before:  # The next script defines them too.',
      '    delattr(flags.FLAGS, name)',
      'print([m for m in ("tensorflow", "clu.metric_writers") if m in sys.modules])'])
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, cwd=REPO, timeout=120, check=True)
  assert out.stdout.strip() == '[]', out.stderr[-2000:]
