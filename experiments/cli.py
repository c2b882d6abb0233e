"""Command-line plumbing shared by ``experiments.train`` and ``experiments.sweep``.

``--config path/to/config.py[:arg]`` plus Flax-style ``--config.key=value`` overrides
(ml_collections ``config_flags``), ``--workdir`` and ``--overwrite``. An override of a key
that does not exist, or a value of the wrong type, exits with status 2 and a message that
lists the valid keys; so does a bad config value. SIGINT and SIGTERM stop a run cleanly
(:func:`stop_on_signals`): one line, exit status 130.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import runpy
import signal
import sys
import threading

from absl import app, flags, logging
import jax
import ml_collections
from ml_collections import config_flags

FLAGS = flags.FLAGS
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs")
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


def config_files() -> list[str]:
  """``configs/<name>.py`` for every config in the repository."""
  return sorted(f"configs/{f}" for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and f != "__init__.py")


def define_flags(config_help: str, workdir_help: str) -> None:
  """Defines ``--config``, ``--workdir`` and ``--overwrite`` (once, from ``__main__``).

  The ``--config`` help lists the config files and the optimizer names.
  """
  from experiments import optimizers  # pylint: disable=import-outside-toplevel
  config_help += (f" Configs: {', '.join(config_files())}. Optimizers (for "
                  f"`:name` or optimizer.name): {', '.join(optimizers.names())}.")
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.DEFINE_bool("overwrite", False,
                    "Replace a run of another config found in the workdir (its "
                    "config.json, metrics, summary and checkpoints) instead of stopping.")
  flags.mark_flags_as_required(["config"])


def quiet_libraries() -> None:
  """Only this package's INFO lines in the absl log (libraries' warnings still show)."""
  here = os.path.dirname(os.path.abspath(__file__))
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or record.pathname.startswith(here))


def request_cpu_devices(num_devices: int) -> None:
  """Ask for ``num_devices`` host devices; must run before JAX initialises its backends."""
  if num_devices > 1:
    try:
      jax.config.update("jax_num_cpu_devices", num_devices)
    except RuntimeError:  # backends already initialised; the config check says what to do
      pass


def exit_with_error(error: Exception) -> None:
  """Prints ``error: <message>`` to stderr and exits with status 2."""
  print(f"error: {error}", file=sys.stderr)
  sys.exit(EXIT_BAD_CONFIG)


def exit_interrupted(message: str) -> None:
  """Prints ``message`` (one line) to stderr and exits with status 130."""
  print(message, file=sys.stderr, flush=True)
  sys.exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def stop_on_signals():
  """Yields a ``threading.Event`` that SIGINT or SIGTERM sets instead of killing.

  The training loop checks it after every step, saves a checkpoint if one is due and
  stops. A second signal while stopping raises ``KeyboardInterrupt`` at once. The
  previous handlers are restored on exit.
  """
  stop = threading.Event()

  def handler(signum, frame):
    del frame
    if stop.is_set():
      raise KeyboardInterrupt(signal.Signals(signum).name)
    stop.set()

  previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield stop
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``get_config()`` of ``path[:arg]``, without any command-line override."""
  path, _, arg = spec.partition(":")
  get_config = runpy.run_path(path)["get_config"]
  return get_config(arg) if arg else get_config()


def check_override(config: ml_collections.ConfigDict, path: str) -> str | None:
  """``None`` if ``path`` ('a.b.c') names a key of ``config``, else what is valid there."""
  node, done = config, []
  for key in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return (f"--config.{'.'.join(done)} is a value ({type(node).__name__}), it has no "
              f"key {key!r}")
    if key not in node:
      where = "the config" if not done else f"config.{'.'.join(done)}"
      return f"{where} has no key {key!r}; valid keys: {', '.join(sorted(node.keys()))}"
    node = node[key]
    done.append(key)
  return None


def _overrides(argv: list[str]) -> list[str]:
  paths = []
  for arg in argv[1:]:
    if arg.startswith("--config."):
      paths.append(arg[len("--config."):].split("=", 1)[0])
  return paths


def _config_spec(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """``FLAGS(argv)``, turning unknown config keys and bad values into a clear exit."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}\nSee --help; config keys keep the type of their default.",
          file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)
  except (AttributeError, KeyError) as e:
    spec = _config_spec(argv)
    problems = []
    if spec:
      config = load_config(spec)
      problems = [f"--config.{p}: {msg}" for p in _overrides(argv)
                  if (msg := check_override(config, p))]
    print("error: bad config override\n  " + "\n  ".join(problems or [repr(e)]),
          file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


def run(main) -> None:
  """``app.run(main)`` with :func:`parse_flags`."""
  app.run(main, flags_parser=parse_flags)
