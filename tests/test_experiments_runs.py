"""A run is identified by its config: refusal, resume, default folders, strict JSON."""

import json
import os
import subprocess
import sys

import pytest

from configs import default
from experiments import cli, report, sweep, train
from experiments import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"num_steps": 6, "log_every": 3, "eval_every": 3, "checkpoint_every": 2,
        "hessian.num_iterations": 0}


def _config(**extra):
  config = default.get_config()
  config.optimizer.learning_rate = 0.03  # the smoke tests' point: its step is compiled once
  for key, value in {**TINY, **extra}.items():
    sweep.set_path(config, key, value)
  return config


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_train_resumes_the_same_config_and_refuses_another(tmp_path):
  workdir = str(tmp_path)
  assert train.train_and_evaluate(_config(stop_after_steps=4), workdir) is None
  killed = train.read_metrics(os.path.join(workdir, workdir_lib.METRICS_FILE), 4)
  summary = train.train_and_evaluate(_config(), workdir)  # resumes at step 4
  assert summary["steps"] == 6
  assert summary["code_version"] == workdir_lib.code_version()
  records = train.read_metrics(os.path.join(workdir, workdir_lib.METRICS_FILE), 6)
  assert records[:len(killed)] == killed  # the killed run's records, times included
  assert [r["step"] for r in records if r["split"] == "train"] == [3, 6]

  files = {name: _read(os.path.join(workdir, name))
           for name in (workdir_lib.CONFIG_FILE, workdir_lib.SUMMARY_FILE)}
  # Finished: the same config (a checkpoint cadence is not part of it) reports the run.
  assert train.train_and_evaluate(_config(checkpoint_every=0), workdir) == summary
  # Another config is refused before anything is written, naming what differs.
  with pytest.raises(workdir_lib.RunMismatchError) as error:
    train.train_and_evaluate(_config(**{"optimizer.learning_rate": 0.3, "seed": 1}),
                             workdir)
  lines = str(error.value).splitlines()
  assert lines[1:3] == ["  optimizer.learning_rate: 0.03 → 0.3", "  seed: 0 → 1"]
  assert "--workdir" in lines[-1] and "--overwrite" in lines[-1] and len(lines) == 4
  assert {name: _read(os.path.join(workdir, name)) for name in files} == files
  # --overwrite replaces it.
  other = train.train_and_evaluate(_config(seed=1), workdir, overwrite=True)
  assert other["config_hash"] == workdir_lib.config_hash(_config(seed=1)) != summary[
      "config_hash"]


def test_code_version_is_the_checkout_commit(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                        capture_output=True, text=True, check=False)
  version = workdir_lib.code_version()
  if head.returncode != 0:  # not a git checkout (e.g. an unpacked archive)
    assert version is None
    return
  assert version in (head.stdout.strip(), head.stdout.strip() + "+modified"), version
  # A copy of the package outside any repository records None, not a guess.
  copy = tmp_path / "experiments"
  copy.mkdir()
  (copy / "workdir.py").write_text(_read(workdir_lib.__file__), encoding="utf-8")
  script = ("import sys; sys.path.insert(0, sys.argv[1]); import workdir; "
            "print(workdir.code_version())")
  result = subprocess.run([sys.executable, "-c", script, str(copy)], capture_output=True,
                          text=True, check=True, cwd=tmp_path)
  assert result.stdout.strip() == "None"


def test_run_files_without_a_config_are_refused(tmp_path):
  with open(tmp_path / workdir_lib.METRICS_FILE, "w") as f:
    f.write("{}\n")
  with pytest.raises(workdir_lib.RunMismatchError, match="no config.json"):
    workdir_lib.claim(str(tmp_path), _config())
  assert workdir_lib.claim(str(tmp_path), _config(), overwrite=True) == "new"
  assert not os.path.exists(tmp_path / workdir_lib.METRICS_FILE)


def test_command_line_refusal_exits_2_with_the_differences(tmp_path):
  workdir = str(tmp_path)
  workdir_lib.claim(workdir, _config())
  out = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config", "configs/default.py",
       "--workdir", workdir, "--config.optimizer.learning_rate=0.3"]
      + [f"--config.{k}={v}" for k, v in TINY.items()],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == cli.EXIT_BAD_CONFIG
  assert out.stderr.splitlines() == [
      f"error: {workdir} holds a run of another config; keys that differ (old → new):",
      "  optimizer.learning_rate: 0.03 → 0.3",
      "Use another --workdir for this config, or --overwrite to delete the old run."]


def _suite(**extra):
  config = _config(**extra)
  config.sweep.arms = [dict(label="sgd", optimizer=dict(name="sgd", learning_rate=0.03))]
  config.sweep.update(seeds=(0, 1), reference="", untuned=())
  return config


def test_sweep_reuses_its_runs_and_refuses_changed_ones(tmp_path):
  workdir = str(tmp_path)
  first = sweep.run_sweep(_suite(), workdir)
  assert first["runs_trained"] == 2
  # The probe was off: null plus a flag in strict JSON, and "off" (not "diverged") in
  # the table.
  final = first["configs"][0]["runs"][0]["final"]
  assert final["hessian_top_eigenvalue"] is None and final["hessian_probe"] == "off"
  assert not final["diverged"]
  text = _read(os.path.join(workdir, report.RESULTS_FILE))
  assert "| sgd | 2 |" in text and "| off |" in text and "diverged |" not in text
  again = sweep.run_sweep(_suite(), workdir)
  assert again["runs_trained"] == 0 and again["configs"] == first["configs"]

  before = sorted(os.walk(workdir))
  with pytest.raises(workdir_lib.RunMismatchError) as error:
    sweep.run_sweep(_suite(num_steps=8), workdir)
  assert "holds 2 of this suite's 2 runs with another config" in str(error.value)
  assert "  num_steps: 6 → 8" in str(error.value).splitlines()
  assert sorted(os.walk(workdir)) == before  # nothing trained, nothing rewritten
  replaced = sweep.run_sweep(_suite(num_steps=8), workdir, overwrite=True)
  assert replaced["runs_trained"] == 2
  assert {r["final"]["steps"] for r in replaced["configs"][0]["runs"]} == {8}


def test_default_workdirs_never_collide():
  suites = [cli.load_config(os.path.join(ROOT, name)) for name in cli.config_files()]
  runs = [("configs/default.py", _config()),
          ("configs/default.py", _config(**{"optimizer.learning_rate": 0.3})),
          ("configs/default.py", _config(seed=1)),
          ("configs/default.py:adam", default.get_config("adam"))]
  runs += list(zip(cli.config_files(), suites))  # some share the base config, not the name
  train_dirs = [workdir_lib.default_train_workdir(spec, config) for spec, config in runs]
  sweep_dirs = [workdir_lib.default_sweep_workdir(config) for config in suites]
  assert len(set(train_dirs)) == len(train_dirs)
  assert len(set(sweep_dirs)) == len(sweep_dirs)
  # No run folder is a suite folder or inside one.
  assert all(os.path.commonpath([d, s]) != s for d in train_dirs for s in sweep_dirs)
  # A key that cannot change results (the checkpoint cadence) keeps the run's folder.
  assert workdir_lib.default_train_workdir("configs/default.py", _config()) == (
      workdir_lib.default_train_workdir("configs/default.py", _config(checkpoint_every=0)))


def test_diverged_means_the_loss_bound_and_outputs_stay_strict_json(tmp_path):
  # Cross-entropy starts near ln(10) = 2.3: a bound of 1 stops the run at the first log.
  summary = train.train_and_evaluate(_config(divergence_threshold=1.0), str(tmp_path / "a"))
  assert summary["diverged"] and summary["diverged_at_step"] == 3 and summary["steps"] == 3
  assert summary["hessian_probe"] == "skipped: diverged"
  # A learning rate of 1e30 makes the gradient norm infinite: null, never Infinity.
  summary = train.train_and_evaluate(_config(**{"optimizer.learning_rate": 1e30}),
                                     str(tmp_path / "b"))
  assert summary["diverged"]
  records = [json.loads(line, parse_constant=pytest.fail)
             for line in _read(tmp_path / "b" / workdir_lib.METRICS_FILE).splitlines()]
  assert records[0]["grad_norm"] is None
  for name in (workdir_lib.SUMMARY_FILE, workdir_lib.CONFIG_FILE):
    workdir_lib.read_json(str(tmp_path / "b" / name))  # refuses NaN / Infinity


def test_strict_json_helpers(tmp_path):
  value = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": (1, "x")}
  assert workdir_lib.jsonable(value) == {"a": None, "b": [None, None, 1.5], "c": [1, "x"]}
  path = str(tmp_path / "x.json")
  workdir_lib.write_json(path, value)
  assert workdir_lib.read_json(path)["b"] == [None, None, 1.5]
  with open(path, "w") as f:
    f.write('{"a": NaN}')
  with pytest.raises(ValueError, match="not strict JSON"):
    workdir_lib.read_json(path)
