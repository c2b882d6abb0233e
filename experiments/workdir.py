"""A run is identified by its config: what a workdir records, and when it may be reused.

A run's workdir holds ``config.json``: the resolved config as canonical JSON (sorted keys,
no NaN or infinity) and its SHA-256, the run's identity. Started again in the same
workdir, a run of the same config resumes (or reports its finished results); a run of
another config stops with :class:`RunMismatchError`, which lists the keys that differ,
unless ``overwrite`` replaces the old run. Keys that cannot change a run's results
(``EXECUTION_KEYS``: how often to checkpoint, the progress bar, the stop-for-testing hook,
a suite's ``sweep`` block) are not part of the identity.

Every JSON file of a run is strict JSON (:func:`jsonable`: NaN and infinities become
``null``) and is written atomically (a temporary file renamed over the old one), so a run
killed at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from typing import Any

import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_DIR)
EXECUTION_KEYS = ("checkpoint_every", "progress_bar", "stop_after_steps", "sweep")
MAX_LISTED = 12  # differing keys shown in a mismatch message


class RunMismatchError(ValueError):
  """The workdir holds a run of another config (the message lists the differences)."""


# --- strict JSON -------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
  """``value`` with NaN/infinities as ``None``, NumPy scalars as Python, tuples as lists."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def dumps(value: Any, **kwargs) -> str:
  """Strict JSON text of ``value`` (``json.dumps(..., allow_nan=False)``)."""
  return json.dumps(jsonable(value), allow_nan=False, ensure_ascii=False, **kwargs)


def write_json(path: str, value: Any, compact: bool = False) -> None:
  """Writes strict JSON atomically: a temporary file next to ``path``, then a rename.

  Indented for reading, or without spaces with ``compact`` (a suite's summary, whose
  curves take 1.6x the space indented).
  """
  temporary = f"{path}.{os.getpid()}.tmp"
  layout = {"separators": (",", ":")} if compact else {"indent": 1}
  with open(temporary, "w", encoding="utf-8") as f:
    f.write(dumps(value, **layout) + "\n")
  os.replace(temporary, path)


def read_json(path: str) -> Any:
  """A JSON file; ``NaN``/``Infinity`` (not JSON) are refused."""
  def refuse(name):
    raise ValueError(f"{path} is not strict JSON: it holds {name}")
  with open(path, encoding="utf-8") as f:
    return json.load(f, parse_constant=refuse)


# --- identity ----------------------------------------------------------------------------
def identity(config) -> dict:
  """The config keys that define a run's results (all but ``EXECUTION_KEYS``), as JSON."""
  values = {k: v for k, v in config.to_dict().items() if k not in EXECUTION_KEYS}
  return json.loads(dumps(values))


def canonical_json(values: dict) -> str:
  return dumps(values, sort_keys=True, separators=(",", ":"))


def code_version() -> str | None:
  """The repository's commit (short hash), ``+modified`` if tracked files differ from it.

  None outside a git checkout or without git: a run's record then says so rather than
  guess. Reads the repository holding this package; nothing touches the network.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args):
    return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                          timeout=30, check=False)

  try:
    commit = git("rev-parse", "--short=12", "HEAD")
    if commit.returncode != 0:
      return None
    modified = git("diff", "--quiet", "HEAD", "--").returncode != 0
  except (OSError, subprocess.SubprocessError):
    return None
  return commit.stdout.strip() + ("+modified" if modified else "")


def config_hash(config) -> str:
  """SHA-256 (hex) of the canonical JSON of :func:`identity`."""
  return hashlib.sha256(canonical_json(identity(config)).encode("utf-8")).hexdigest()


def _flatten(values: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def differences(old: dict, new: dict) -> list[str]:
  """``'key: old → new'`` for every dotted key whose value differs (absent: ``—``)."""
  old, new = _flatten(old), _flatten(new)
  lines = []
  for key in sorted(set(old) | set(new)):
    if old.get(key, ...) != new.get(key, ...):
      show = lambda d: "—" if key not in d else json.dumps(d[key], ensure_ascii=False)
      lines.append(f"{key}: {show(old)} → {show(new)}")
  return lines


def _mismatch(workdir: str, problem: str, changes: list[str]) -> RunMismatchError:
  listed = [f"  {line}" for line in changes[:MAX_LISTED]]
  if len(changes) > MAX_LISTED:
    listed.append(f"  ... and {len(changes) - MAX_LISTED} more")
  return RunMismatchError("\n".join(
      [f"{workdir} holds {problem}"] + listed +
      ["Use another --workdir for this config, or --overwrite to delete the old run."]))


def status(workdir: str, config) -> str:
  """``'new'``, ``'resume'`` or ``'finished'``: what ``config`` may do in ``workdir``.

  Raises:
    RunMismatchError: the workdir holds a run of another config, or run files without
      the ``config.json`` that says which config made them.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(workdir, f))]
    if found:
      raise _mismatch(workdir, f"run files ({', '.join(found)}) but no {CONFIG_FILE} "
                      "saying which config made them.", [])
    return "new"
  recorded = read_json(path)
  if recorded.get("hash") != config_hash(config):
    raise _mismatch(workdir, "a run of another config; keys that differ (old → new):",
                    differences(recorded.get("config", {}), identity(config)))
  return "finished" if os.path.exists(os.path.join(workdir, SUMMARY_FILE)) else "resume"


def claim(workdir: str, config, *, overwrite: bool = False) -> str:
  """Prepares ``workdir`` for a run of ``config`` and returns its :func:`status`.

  A new run gets ``config.json`` (canonical config and hash). With ``overwrite``, the
  files of a run of another config (``RUN_FILES``, nothing else) are deleted first.
  """
  try:
    state = status(workdir, config)
  except RunMismatchError:
    if not overwrite:
      raise
    remove_run(workdir)
    state = "new"
  if state == "new":
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE),
               {"hash": config_hash(config), "config": identity(config)})
  return state


def remove_run(workdir: str) -> None:
  """Deletes the files a run writes (``RUN_FILES``) from ``workdir``, nothing else."""
  for name in RUN_FILES:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


# --- default folders ---------------------------------------------------------------------
def root() -> str:
  return os.path.join(tempfile.gettempdir(), "optaxplus")


def default_train_workdir(config_spec: str, config) -> str:
  """``<tmp>/optaxplus/train/<config name>-<hash prefix>``: one folder per config.

  ``config_spec`` is the ``--config`` value (``configs/default.py:adam`` gives the name
  ``default-adam``); the hash makes every distinct config its own run.
  """
  path, _, arg = config_spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0] + (f"-{arg}" if arg else "")
  return os.path.join(root(), "train", f"{name}-{config_hash(config)[:12]}")


def default_sweep_workdir(config) -> str:
  """``<tmp>/optaxplus/sweep/<suite name>`` (each of its runs is checked by its config)."""
  return os.path.join(root(), "sweep", config.sweep.name)
