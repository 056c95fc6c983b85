"""Entry points started by fork from one pre-imported Python.

Each test that runs `train.py`, `evaluate.py`, ... in a subprocess would pay
~5.5 CPU-s importing jax, flax, orbax and TensorFlow before it reads its first
flag, and the suite starts dozens. A server (`python prefork.py SOCKET`)
imports them once, initialising no JAX backend and running no TensorFlow op,
and forks a child per run; the child takes the run's argv, working directory,
environment and standard streams, runs the script as `__main__` and exits as
the script would (atexit handlers, exit status, death by signal).

`Launcher.start()` returns a handle like `subprocess.Popen`'s. A run whose
environment differs from the server's (but for PYTHONPATH entries added in
front) starts a plain subprocess: modules already imported may have read it;
so does every run when TASAD_JAX_TEST_NO_PREFORK is set.
"""

import atexit
import importlib
import json
import os
import pkgutil
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the entry points import, at the top or inside functions.
PRELOAD = ('numpy', 'PIL.Image', 'absl.app', 'absl.flags', 'absl.logging',
           'ml_collections.config_flags', 'jax', 'jax.numpy', 'flax.linen',
           'optax', 'orbax.checkpoint', 'tensorflow', 'clu.metric_writers',
           'clu.periodic_actions', 'skimage.segmentation')
# Variables no module reads at import: they may differ (pytest names the test;
# a benchmark worker reads its scheduler's task index when it runs).
IGNORED_ENV = ('PYTEST_CURRENT_TEST', 'SLURM_ARRAY_TASK_ID',
               'SLURM_ARRAY_TASK_MIN', 'SLURM_ARRAY_TASK_COUNT',
               'JOB_COMPLETION_INDEX', 'TASAD_JAX_SHARD_COUNT')


def _preload() -> None:
  for name in PRELOAD:
    importlib.import_module(name)
  sys.path.insert(0, REPO)
  import tasad_jax  # pylint: disable=g-import-not-at-top
  for module in pkgutil.walk_packages(tasad_jax.__path__, 'tasad_jax.'):
    importlib.import_module(module.name)
  sys.path.remove(REPO)
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  # A backend made here would be shared by every child: none may exist.
  assert not xla_bridge._backends, 'a module initialised JAX at import'  # pylint: disable=protected-access


def _exec(request: dict) -> None:
  """Becomes the run: its streams, cwd, environment, argv; never returns."""
  os.chdir(request['cwd'])
  os.environ.clear()
  os.environ.update(request['env'])
  for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                         (1, request['stdout'], os.O_WRONLY),
                         (2, request['stderr'], os.O_WRONLY)):
    os.dup2(os.open(path, mode), fd)
  # Ctrl-C as in a freshly started Python, whatever the test process left.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  script = request['argv'][0]
  sys.argv = list(request['argv'])
  sys.path[0] = os.path.dirname(os.path.abspath(script))
  sys.path[1:1] = request['path']
  code = 0
  try:
    runpy.run_path(script, run_name='__main__')
  except SystemExit as e:  # As Python: None is 0, a message is printed and 1.
    if e.code is None or isinstance(e.code, int):
      code = e.code or 0
    else:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    sys.excepthook(*sys.exc_info())
    code = 1
  # The interpreter's own exit but for its finalisation (~1.5 s once
  # TensorFlow is loaded): atexit handlers, flushed streams, the status.
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def _supervise(conn: socket.socket, request: dict) -> None:
  """Forks the run, sends its pid, then its wait status; never returns."""
  signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # waitpid needs its child.
  pid = os.fork()
  if pid == 0:
    conn.close()
    _exec(request)
  conn.sendall(f'{pid}\n'.encode())
  _, status = os.waitpid(pid, 0)
  conn.sendall(f'{status}\n'.encode())
  os._exit(0)  # pylint: disable=protected-access


def serve(path: str) -> None:
  """Accepts one JSON request per connection until the server is killed."""
  _preload()
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(path)
  listener.listen(16)
  signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # Supervisors reap themselves.
  # The imports leave two idle native threads, which no child uses (Python
  # 3.12 warns of every fork beside threads).
  warnings.filterwarnings('ignore', '.*multi-threaded.*', DeprecationWarning)
  print('ready', json.dumps(dict(os.environ)), flush=True)  # As imports left it.
  while True:
    conn, _ = listener.accept()
    request = json.loads(conn.makefile().readline())
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
      listener.close()
      _supervise(conn, request)
    conn.close()


class Run:
  """A forked run, with the parts of `subprocess.Popen` the tests use."""

  def __init__(self, conn: socket.socket, stdout: str, stderr: str):
    self._conn, self._files = conn, (stdout, stderr)
    self._reader = conn.makefile()
    self.pid = int(self._reader.readline())
    self.returncode = None

  def wait(self, timeout=None) -> int:
    if self.returncode is None:
      self._conn.settimeout(timeout)
      try:
        line = self._reader.readline()
      except TimeoutError:
        raise subprocess.TimeoutExpired(str(self.pid), timeout) from None
      self.returncode = os.waitstatus_to_exitcode(int(line))
      self._conn.close()
    return self.returncode

  def poll(self) -> int | None:
    if self.returncode is None and not select.select([self._conn], [], [], 0)[0]:
      return None
    return self.wait()

  def send_signal(self, sig: int) -> None:
    if self.returncode is None:
      os.kill(self.pid, sig)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)

  def communicate(self, timeout=None) -> tuple[str, str]:
    try:
      self.wait(timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      self.wait()
      raise
    out = []
    for path in self._files:
      with open(path, encoding='utf-8', errors='replace') as f:
        out.append(f.read())
      os.unlink(path)
    return out[0], out[1]


class Launcher:
  """This process's server, started on first use and stopped by `close()`."""

  def __init__(self):
    self._dir = self._path = self._proc = None
    self._env = dict(os.environ)
    self._imported_env = {}  # The server's, once its imports set some.

  def _socket(self) -> str:
    """The server's socket; starts the server when none runs."""
    if self._proc is None:
      self._dir = tempfile.mkdtemp(prefix='tasad_jax_prefork_')
      self._path = os.path.join(self._dir, 'socket')
      self._proc = subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), self._path], env=self._env,
          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
      word, _, env = self._proc.stdout.readline().partition(' ')
      assert word == 'ready', 'prefork failed'
      self._imported_env = json.loads(env)
    return self._path

  def _path_added(self, env: dict):
    """PYTHONPATH entries `env` adds in front of the server's, or None when
    `env` differs otherwise (a value the server's imports set themselves,
    e.g. TensorFlow's TF2_BEHAVIOR, is no difference)."""
    for name in set(env) | set(self._env):
      value = env.get(name)
      if name not in IGNORED_ENV + ('PYTHONPATH',) and value not in (
          self._env.get(name), self._imported_env.get(name)):
        return None
    ours, theirs = self._env.get('PYTHONPATH', ''), env.get('PYTHONPATH', '')
    if not theirs.endswith(ours):
      return None
    return [p for p in theirs[:len(theirs) - len(ours)].split(os.pathsep) if p]

  def start(self, argv: list[str], cwd: str = REPO, env: dict | None = None):
    """Starts `python argv...` (argv[0] a script): a `Run`, or a
    `subprocess.Popen` with text pipes when it cannot be forked."""
    env = dict(os.environ if env is None else env)
    path = None
    if not os.environ.get('TASAD_JAX_TEST_NO_PREFORK'):
      self._socket()  # The check below reads the server's environment.
      path = self._path_added(env)
    if path is None:
      # Ctrl-C caught here is Ctrl-C at its default in the child: not the
      # ignored one some library may have left (no preexec_fn, which would
      # fork a process running JAX's threads).
      if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
      return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(self._socket())
    streams = [tempfile.mkstemp(prefix='run_', dir=self._dir)
               for _ in range(2)]
    for fd, _ in streams:
      os.close(fd)
    request = {'argv': argv, 'cwd': cwd, 'env': env, 'path': path,
               'stdout': streams[0][1], 'stderr': streams[1][1]}
    conn.sendall((json.dumps(request) + '\n').encode())
    return Run(conn, streams[0][1], streams[1][1])

  def close(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()
      self._proc.stdout.close()
      shutil.rmtree(self._dir, ignore_errors=True)
      self._proc = None


if __name__ == '__main__':
  serve(sys.argv[1])
