"""The package's import graph: no cycles, and layers that import one way.

The tree is the architecture: each subpackage of `tasad_jax` is one layer,
and a module imports only its own layer and the layers below it. Packages that
share a rank (deploy and evaluation) do not import each other.
"""

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, 'tasad_jax')
# Bottom to top; one tuple per rank.
LAYERS = (
    ('runtime',),     # errors, files, job, launcher, checkpoints, TF gateway
    ('core',),        # names, train state, stage contract, sharding, losses, scores, geometry, metrics
    ('models',),      # networks
    ('data',),        # readers, sources, pseudo-anomalies, the tf.data stream
    ('methods',),     # coarse stages, plug-ins by name
    ('fine',),        # TASAD's fine stage on any coarse method
    ('config',),      # presets and the schema
    ('reporting',),   # heat maps, plots, HTML
    ('inference',),   # two-stage program, whole images, predictor, thresholds
    ('deploy', 'evaluation'),
    ('training',),
    ('benchmark',),   # sweeps of train + evaluate cells, their table
    ('cli',),
)
RANK = {pkg: i for i, names in enumerate(LAYERS) for pkg in names}


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


def layer(module: str) -> str | None:
  """The subpackage (layer) of a module; None for the package's own init."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else None


def upward_imports(graph) -> list[str]:
  """'a -> b' for each import of a higher layer, or of a sibling at one rank."""
  wrong = []
  for module, edges in graph.items():
    here = layer(module)
    if here is None:
      continue
    for other in edges:
      there = layer(other)
      if there is not None and there != here and RANK[there] >= RANK[here]:
        wrong.append(f'{module} ({here}) -> {other} ({there})')
  return sorted(wrong)


def _reachable(graph, start):
  seen, todo = set(), [start]
  while todo:
    for nxt in graph[todo.pop()]:
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_every_module_is_in_a_layer():
  graph = import_graph()
  assert len(graph) > 40
  flat = [m for m in graph if m != 'tasad_jax' and layer(m) not in RANK]
  assert not flat, f'modules outside the layers: {sorted(flat)}'
  top = [m for m in graph if m.count('.') == 1 and m.split('.')[1] not in RANK]
  assert not top, f'flat modules beside the layers: {top}'


def test_no_import_cycle():
  graph = import_graph()
  cycles = [m for m in graph if m in _reachable(graph, m)]
  assert not cycles, f'modules on an import cycle: {sorted(cycles)}'


def test_layers_import_one_way():
  assert upward_imports(import_graph()) == []


@pytest.mark.parametrize('module,imported', [
    ('tasad_jax.core.losses', 'tasad_jax.training.trainer'),
    ('tasad_jax.methods.destseg', 'tasad_jax.fine.fas'),
    ('tasad_jax.deploy.export', 'tasad_jax.evaluation.evaluate'),
])
def test_the_checker_finds_an_upward_import_and_a_cycle(module, imported):
  """The checks are real: a planted import up a layer (or to a sibling) is
  reported, and one that closes a loop is a cycle."""
  graph = import_graph()
  graph[module] = graph[module] | {imported}
  assert any(w.startswith(module + ' ') for w in upward_imports(graph))
  graph[imported] = graph[imported] | {module}
  assert module in [m for m in graph if m in _reachable(graph, m)]


def test_entry_points_import_tensorflow_only_when_used():
  """Defining and parsing an entry point's flags (before any work) imports no
  TensorFlow: a bad flag, a refused workdir or a launcher of processes costs
  no TF import."""
  code = '\n'.join([
      'import importlib, sys',
      'from absl import flags',
      'for name in ("train", "evaluate", "predict", "export", '
      '"validation_split"):',
      '  before = set(flags.FLAGS)',
      '  importlib.import_module("tasad_jax.cli." + name).define_flags()',
      '  for flag in set(flags.FLAGS) - before:  # The next one defines them too.',
      '    delattr(flags.FLAGS, flag)',
      'from tasad_jax.cli import app',
      'app.config_argv(["x", "--config=demo"])',
      'print([m for m in ("tensorflow", "clu.metric_writers") if m in sys.modules])'])
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, cwd=REPO, timeout=120, check=True)
  assert out.stdout.strip() == '[]', out.stderr[-2000:]
