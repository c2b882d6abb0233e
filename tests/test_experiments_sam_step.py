"""The runner decides SAM steps in Python: two compiled steps, the every_k trajectory."""

import math

from configs import default
from experiments import sweep, train

TINY = {"num_steps": 6, "log_every": 3, "eval_every": 6, "checkpoint_every": 0,
        "hessian.num_iterations": 0, "sam.enabled": True, "sam.every_k": 3,
        "optimizer.learning_rate": 0.03}


def _config():
  config = default.get_config("sgd")
  for key, value in TINY.items():
    sweep.set_path(config, key, value)
  return config


def test_sam_step_at_follows_the_every_k_schedule():
  config = _config()
  assert [train.sam_step_at(config, t) for t in range(6)] == [
      True, False, False, True, False, False]
  config.sam.every_k = 1
  assert train.sam_step_at(config, 0) is None
  config.sam.enabled = False
  assert train.sam_step_at(config, 0) is None


def test_python_schedule_equals_the_in_graph_schedule(tmp_path, monkeypatch):
  static = train.train_and_evaluate(_config(), str(tmp_path / "static"))
  monkeypatch.setattr(train, "sam_step_at", lambda config, step: None)  # lax.cond path
  in_graph = train.train_and_evaluate(_config(), str(tmp_path / "cond"))
  for key in ("train_loss", "validation_loss", "test_loss", "test_accuracy"):
    assert math.isclose(static[key], in_graph[key], rel_tol=1e-5), key
