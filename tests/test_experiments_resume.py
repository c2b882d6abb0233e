"""Kill a run mid-way, resume it from its orbax checkpoint: the results are identical."""

import json
import os
import signal
import subprocess
import sys
import time

from experiments import train

from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small and quick; the probe runs too, so its result is compared as well.
OVERRIDES = {"num_steps": 60, "log_every": 5, "eval_every": 25, "checkpoint_every": 20,
             "hessian.num_iterations": 3}


def _config(**extra):
  config = default.get_config("momsps")  # a stateful optimizer: its state must round-trip
  for key, value in {**OVERRIDES, **extra}.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _records(workdir):
  with open(os.path.join(workdir, train.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def _without_time(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records]


def _comparable(summary):
  return {k: v for k, v in summary.items() if k != "train_time_s"}


def test_stop_and_resume_gives_identical_results(tmp_path):
  full = train.train_and_evaluate(_config(), str(tmp_path / "full"))

  workdir = str(tmp_path / "killed")
  assert train.train_and_evaluate(_config(stop_after_steps=47), workdir) is None
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["40"]
  assert not os.path.exists(os.path.join(workdir, train.SUMMARY_FILE))
  before = _records(workdir)
  assert before[-1]["step"] == 45  # records past the last checkpoint (40) exist...
  resumed = train.train_and_evaluate(_config(), workdir)
  after = _records(workdir)

  assert _comparable(resumed) == _comparable(full)
  assert _without_time(after) == _without_time(_records(str(tmp_path / "full")))
  # ...and are dropped: the run restarted at step 40, it did not redo steps 1-40 (their
  # records, wall-clock times included, are the killed run's own).
  kept = [r for r in before if r["step"] <= 40]
  assert after[:len(kept)] == kept
  assert after[len(kept)]["step"] == 45 and after[len(kept)] != before[len(kept)]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
  """A real SIGKILL of a command-line run, then the same command again."""
  workdir = str(tmp_path / "killed")
  args = [sys.executable, "-m", "experiments.train", "--config", "configs/default.py:momsps",
          "--workdir", workdir] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  args += ["--config.num_steps=150", "--config.checkpoint_every=10"]
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not os.path.exists(os.path.join(workdir, train.SUMMARY_FILE))

  before = _records(workdir)
  config = _config(num_steps=150, checkpoint_every=10)  # the command line's config
  resumed = train.train_and_evaluate(config, workdir)
  after = _records(workdir)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  assert _comparable(resumed) == _comparable(full)
  assert _without_time(after) == _without_time(_records(str(tmp_path / "full")))
  # It resumed (kept the killed process's records up to its last checkpoint).
  assert after[0] == before[0] and after[-1]["step"] == 150
