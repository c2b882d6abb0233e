"""Command-line plumbing shared by ``experiments.train`` and ``experiments.sweep``.

``--config path/to/config.py[:arg]`` plus Flax-style ``--config.key=value`` overrides
(ml_collections ``config_flags``) and ``--workdir``. An override of a key that does not
exist, or a value of the wrong type, exits with a message that lists the valid keys.
"""

from __future__ import annotations

import runpy
import sys

from absl import app, flags
import ml_collections
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags(config_help: str, workdir_help: str) -> None:
  """Defines ``--config`` and ``--workdir`` (call once, from a ``__main__`` block)."""
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.mark_flags_as_required(["config"])


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
    sys.exit(f"error: {e}\nSee --helpfull; config keys keep the type of their default.")
  except (AttributeError, KeyError) as e:
    spec = _config_spec(argv)
    problems = []
    if spec:
      config = load_config(spec)
      problems = [f"--config.{p}: {msg}" for p in _overrides(argv)
                  if (msg := check_override(config, p))]
    sys.exit("error: bad config override\n  " + "\n  ".join(problems or [repr(e)]))


def run(main) -> None:
  """``app.run(main)`` with :func:`parse_flags`."""
  app.run(main, flags_parser=parse_flags)
