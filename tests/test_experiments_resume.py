"""Stop a run any way it can stop, run it again: the results are an uninterrupted run's.

Stopped at a step (in process), SIGKILLed between checkpoints, SIGKILLed in the middle
of a checkpoint save, or interrupted by SIGINT / SIGTERM: the same config then resumes
from the last complete checkpoint and ends with bit-identical records and final metrics.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from configs import default
from experiments import cli, sweep, train
from experiments import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small and quick; the probe runs too, so its result is compared as well.
OVERRIDES = {"num_steps": 100, "log_every": 5, "eval_every": 25, "checkpoint_every": 20,
             "hessian.num_iterations": 3}
COMMAND = (["-m", "experiments.train", "--config", "configs/default.py:momsps"]
           + [f"--config.{k}={v}" for k, v in OVERRIDES.items()])
# Runs `experiments.train` with orbax's commit step (the rename of the written temporary
# folder into place) replaced by a SIGKILL for the checkpoint named by argv[1].
KILL_IN_SAVE = """
import os, runpy, signal, sys
from orbax.checkpoint._src.path import atomicity

commit, step = atomicity.AtomicRenameTemporaryPath.finalize, sys.argv[1]

async def killed_before_commit(self, *args, **kwargs):
  if self.get_final().name == step:
    os.kill(os.getpid(), signal.SIGKILL)
  return await commit(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = killed_before_commit
sys.argv = ["experiments.train"] + sys.argv[2:]
runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
"""


def _config(**extra):
  config = default.get_config("momsps")  # a stateful optimizer: its state must round-trip
  for key, value in {**OVERRIDES, **extra}.items():
    sweep.set_path(config, key, value)
  return config


def _records(workdir):
  return train.read_metrics(os.path.join(workdir, workdir_lib.METRICS_FILE), 10**9)


def _without_time(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records]


def _comparable(summary):
  return {k: v for k, v in summary.items() if k != "train_time_s"}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
  """The uninterrupted run: its summary and records."""
  workdir = str(tmp_path_factory.mktemp("full"))
  return train.train_and_evaluate(_config(), workdir), _records(workdir)


def _assert_resumes_to(full, workdir, before):
  """Resumes ``workdir``; checks it matches ``full`` and kept the records it had."""
  resumed = train.train_and_evaluate(_config(), workdir)
  after = _records(workdir)
  assert _comparable(resumed) == _comparable(full[0])
  assert _without_time(after) == _without_time(full[1])
  # It resumed: records up to the last checkpoint are the stopped run's own (their
  # wall-clock times included), not redone.
  assert after[0] == before[0] and after[0]["time"] != full[1][0]["time"]


def test_stop_and_resume_gives_identical_results(tmp_path, full):
  workdir = str(tmp_path)
  assert train.train_and_evaluate(_config(stop_after_steps=47), workdir) is None
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["40"]
  assert not os.path.exists(os.path.join(workdir, workdir_lib.SUMMARY_FILE))
  before = _records(workdir)
  assert before[-1]["step"] == 45  # records past the last checkpoint (40) exist...
  _assert_resumes_to(full, workdir, before)
  kept = [r for r in before if r["step"] <= 40]  # ...and are dropped, then redone
  assert _records(workdir)[:len(kept)] == kept


def _wait_for_checkpoint(proc, checkpoints):
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
      return
    time.sleep(0.02)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, full):
  """A real SIGKILL of a command-line run, then the same config again."""
  workdir = str(tmp_path)
  proc = subprocess.Popen([sys.executable] + COMMAND + ["--workdir", workdir], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_checkpoint(proc, os.path.join(workdir, "checkpoints"))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not os.path.exists(os.path.join(workdir, workdir_lib.SUMMARY_FILE))
  _assert_resumes_to(full, workdir, _records(workdir))


def test_sigkill_during_a_checkpoint_save_then_resume(tmp_path, full):
  """Killed with checkpoint 40 written but not committed: resumed from 20, identical."""
  workdir = str(tmp_path)
  proc = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, "40"] + COMMAND[2:]
                        + ["--workdir", workdir], cwd=ROOT, capture_output=True,
                        timeout=300, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  checkpoints = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert checkpoints[0] == "20" and checkpoints[1].startswith("40.orbax-checkpoint-tmp")
  assert os.listdir(os.path.join(workdir, "checkpoints", checkpoints[1]))  # half saved
  _assert_resumes_to(full, workdir, _records(workdir))
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["100"]


def test_sigint_checkpoints_prints_one_line_and_exits_130(tmp_path, full):
  workdir = str(tmp_path)
  proc = subprocess.Popen([sys.executable] + COMMAND + ["--workdir", workdir], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:  # the first progress line: training is under way
    if "step 25/100" in line:
      break
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == cli.EXIT_INTERRUPTED, err
  assert not out and "Traceback" not in err
  message = [line for line in err.splitlines() if "interrupted" in line]
  assert len(message) == 1 and message == err.splitlines()[-1:]
  step = int(message[0].split()[3].rstrip(";"))
  assert message[0] == f"interrupted at step {step}; run the same command again to resume"
  assert 25 < step < 100
  # A checkpoint at the interrupted step (it was due: progress since checkpoint 20).
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(step)]
  _assert_resumes_to(full, workdir, _records(workdir))


def test_sigterm_sets_the_stop_event_and_training_stops(tmp_path):
  with cli.stop_on_signals() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5)
    with pytest.raises(train.Interrupted, match="interrupted at step 0; run the same "
                                                "command again to resume"):
      train.train_and_evaluate(_config(), str(tmp_path), stop=stop)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
  assert not os.listdir(tmp_path / "checkpoints")  # nothing to save at step 0
  event = threading.Event()
  event.set()
  with pytest.raises(train.Interrupted):  # an event set by anyone stops a run
    train.train_and_evaluate(_config(), str(tmp_path), stop=event)
