"""A few steps of every config: the loss goes down and every output exists and parses."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

from experiments import cli, sweep, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The arms each suite's smoke test trains: between them every optimizer and wrapper the
# suites use, at a few seconds of compilation each (every arm of every suite is also
# expanded and validated in test_experiments_config).
SUITES = {
    "default": ("momsps (defaults)", "sgd-momentum", "adam"),
    "no_tuning_cnn": ("momsps_smooth", "sps+heavy-ball (naive)", "momo"),
    "no_tuning_lm": ("momsps",),
    "unified_sam": ("sgd-momentum (base)", "λ=1-1/t", "SAM every_k=2"),
    "large_batch": ("alto", "lamb"),
    "explore_small_batch": ("esgd", "eadam"),
    "large_batch_gpu": ("alto",),  # at batch 32 here (see test_suite)
}
SINGLE_RUNS = ("default", "digits_mlp", "stdlib_lm")


def _load(name, steps=12):
  config = cli.load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  config.num_steps = steps
  config.log_every = 3
  config.eval_every = 6
  config.checkpoint_every = 0
  config.hessian.num_iterations = 0
  config.sweep.seeds = (0,)
  config.sweep.max_grid_points = 1
  return config


def _train_losses(records):
  return [r["loss"] for r in records if r["split"] == "train"]


def _assert_run_outputs(run_dir, config, probe=False):
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["optimizer"] == config.optimizer.to_dict()
  with open(os.path.join(run_dir, train.METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  steps = [r["step"] for r in records if r["split"] == "train"]
  assert steps == list(range(3, config.num_steps + 1, 3))
  assert [r["step"] for r in records if r["split"] == "test"] == sorted(
      {*range(6, config.num_steps, 6), config.num_steps})
  losses = _train_losses(records)
  assert np.all(np.isfinite(losses))
  assert min(losses[1:]) < losses[0], f"loss did not go down: {losses}"
  with open(os.path.join(run_dir, train.SUMMARY_FILE)) as f:
    summary = json.load(f)
  assert summary["steps"] == config.num_steps and not summary["diverged"]
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  assert np.isfinite(summary["test_loss"]) and np.isfinite(summary["train_loss"])
  if probe:
    assert np.isfinite(summary["hessian_top_eigenvalue"]) and summary["hessian_iterations"]
  return records


@pytest.mark.parametrize("name", SINGLE_RUNS)
def test_single_run(name, tmp_path):
  config = _load(name)
  if name == "default":  # the default suite's first SGD point: its compiled step is reused
    config.optimizer.learning_rate = 0.03
  probe = config.dataset == "digits"  # the LM's HVP compiles slowly; the suites probe it
  config.hessian.num_iterations = 3 if probe else 0
  summary = train.train_and_evaluate(config, str(tmp_path))
  _assert_run_outputs(str(tmp_path), config, probe=probe)
  if config.dataset == "stdlib_chars":  # perplexity is exp of the per-character test loss
    np.testing.assert_allclose(summary["test_perplexity"], np.exp(summary["test_loss"]))


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite(name, tmp_path):
  # Full-batch steps cost 22 small ones: fewer of them.
  config = _load(name, steps=6 if name == "large_batch" else 12)
  if name == "large_batch_gpu":  # sized for an accelerator; the code path is the same
    config.batch_size, config.num_devices = 32, 1
  config.sweep.arms = [arm for arm in config.sweep.arms if arm["label"] in SUITES[name]]
  assert len(config.sweep.arms) == len(SUITES[name])
  if config.sweep.reference not in SUITES[name]:
    config.sweep.reference = ""
  config.sweep.untuned = tuple(a for a in config.sweep.untuned if a in SUITES[name])
  if name == "default":
    config.hessian.num_iterations = 3
  workdir = str(tmp_path)
  results = sweep.run_sweep(config, workdir, command=f"python -m experiments.sweep {name}")
  runs = sweep.expand(config)
  assert len(results["configs"]) == len(runs)
  for run in runs:
    _assert_run_outputs(os.path.join(workdir, "runs", run.run_id), run.config,
                        probe=name == "default")
    # A finished run is not redone; checkpoints of finished runs are removed.
    assert not os.path.exists(os.path.join(workdir, "runs", run.run_id, "checkpoints"))

  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert text.splitlines()[3] == f"python -m experiments.sweep {name}"
  for run in runs:
    assert f"| {run.label} | 1 |" in text
  assert "top Hessian eig." in text and "wall time / run (s)" in text
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert [c["label"] for c in summary["configs"]] == [r.label for r in runs]
  for png in ("curves.png", "step_size.png", "final_metrics.png"):
    image = matplotlib.image.imread(os.path.join(workdir, png))
    assert image.ndim == 3 and image.shape[0] > 100

  if name == "default":  # a finished sweep run again only rewrites its report
    summary_path = os.path.join(workdir, "runs", runs[0].run_id, train.SUMMARY_FILE)
    mtime = os.path.getmtime(summary_path)
    os.remove(os.path.join(workdir, "results.md"))
    sweep.run_sweep(config, workdir)
    assert os.path.getmtime(summary_path) == mtime
    assert os.path.exists(os.path.join(workdir, "results.md"))
