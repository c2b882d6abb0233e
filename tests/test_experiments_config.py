"""Configs, overrides and the errors for bad ones (command line and Python)."""

import os
import subprocess
import sys

import jax
import pytest

from configs import default, stdlib_lm
from experiments import checks, cli, optimizers, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                      if f.endswith(".py") and f != "__init__.py")


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)


def test_unknown_key_and_bad_value_on_the_command_line():
  out = _cli("--config", "configs/default.py", "--config.optimizer.lr=0.1",
             "--config.num_stepz=3")
  assert out.returncode == cli.EXIT_BAD_CONFIG
  assert "config.optimizer has no key 'lr'" in out.stderr
  assert "valid keys: learning_rate, momentum, name, nesterov, weight_decay" in out.stderr
  assert "the config has no key 'num_stepz'" in out.stderr and "num_steps" in out.stderr
  out = _cli("--config", "configs/default.py", "--config.num_steps=many")
  assert out.returncode == cli.EXIT_BAD_CONFIG and "--config.num_steps=many" in out.stderr
  out = _cli("--config", "configs/default.py", "--config.optimizer.name=adam")
  assert out.returncode == cli.EXIT_BAD_CONFIG
  assert "optimizer 'adam' does not take ['momentum', 'nesterov', 'weight_decay']" in (
      out.stderr)
  assert "--config <config file>:adam" in out.stderr


@pytest.mark.parametrize("entry, override, message", [
    ("experiments.train", "--config.optimizer.learning_rate=-0.1",
     "optimizer.learning_rate must be a finite number in (0.0, inf), got -0.1."),
    ("experiments.sweep", "--config.sam.rho=-0.5",
     "sam.rho must be a finite number in [0.0, inf) or a schedule (a callable of the step), "
     "got -0.5."),
])
def test_bad_values_exit_2_with_one_line_before_compiling(entry, override, message):
  out = subprocess.run([sys.executable, "-m", entry, "--config", "configs/default.py",
                        override, "--workdir", "/nonexistent/never/created"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == cli.EXIT_BAD_CONFIG
  assert out.stderr.splitlines() == [f"error: {message}"]
  assert not out.stdout and not os.path.exists("/nonexistent")


def test_help_lists_configs_and_optimizers():
  for entry in ("experiments.train", "experiments.sweep"):
    out = subprocess.run([sys.executable, "-m", entry, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    text = " ".join((out.stdout + out.stderr).split())
    for name in CONFIG_NAMES:
      assert f"configs/{name}.py" in text, (entry, name)
    for name in optimizers.names():
      assert f" {name}," in text or f" {name}." in text, (entry, name)
    assert "--overwrite" in text and "--workdir" in text


def test_check_override_lists_valid_keys():
  config = default.get_config()
  assert cli.check_override(config, "optimizer.learning_rate") is None
  assert "valid keys: batch_size" in cli.check_override(config, "batch")
  assert "is a value" in cli.check_override(config, "seed.x")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_loads_and_validates(name):
  config = cli.load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  if "mesh" in config and config.mesh.fsdp > jax.device_count():
    # Sized for more devices than this process has (tests/test_experiments_multidevice.py
    # runs it on 8): every other key is checked here on one.
    config.mesh.fsdp = 1
  checks.validate(config)
  runs = sweep.expand(config)
  assert runs and len({r.run_id for r in runs}) == len(runs)
  for run in runs:
    checks.validate(run.config)


def test_config_string_switches_optimizer():
  config = cli.load_config(os.path.join(ROOT, "configs", "default.py:momsps"))
  assert config.optimizer.to_dict() == {"name": "momsps", **optimizers.hyperparameters(
      "momsps")}
  assert stdlib_lm.get_config("sgd").optimizer.name == "sgd"


def _bad(key, value, optimizer="sgd"):
  config = default.get_config(optimizer)
  sweep.set_path(config, key, value)
  return config


# (key, value, optimizer, the message): every key with a range, for optax baselines and
# for optaxplus's methods alike.
BAD_VALUES = [
    ("optimizer.learning_rate", -0.1, "sgd", r"optimizer.learning_rate .* \(0.0, inf\)"),
    ("optimizer.learning_rate", 0.0, "alto", r"optimizer.learning_rate .* \(0.0, inf\)"),
    ("optimizer.learning_rate", float("inf"), "adam", "optimizer.learning_rate"),
    ("optimizer.learning_rate", float("nan"), "eadam", "optimizer.learning_rate"),
    ("optimizer.momentum", 1.5, "sgd", r"optimizer.momentum .* \[0.0, 1.0\)"),
    ("optimizer.momentum", 1.0, "momsps", r"optimizer.momentum .*1.0"),
    ("optimizer.momentum", -0.1, "sps_naive_momentum", r"optimizer.momentum .*\[0.0, 1.0\)"),
    ("optimizer.b1", 1.0, "adam", r"optimizer.b1 .* \[0.0, 1.0\)"),
    ("optimizer.b2", -0.5, "adamw", r"optimizer.b2 .* \[0.0, 1.0\)"),
    ("optimizer.b2", 1.0, "lamb", r"optimizer.b2 .* \[0.0, 1.0\)"),
    ("optimizer.beta", 1.0, "momo", r"optimizer.beta .* \[0.0, 1.0\)"),
    ("optimizer.eps", -1e-8, "adam", r"optimizer.eps .* \[0.0, inf\)"),
    ("optimizer.weight_decay", -1e-4, "adamw", r"optimizer.weight_decay .* \[0.0, inf\)"),
    ("optimizer.clip_norm", -1.0, "lamb", r"optimizer.clip_norm .* \[0.0, inf\)"),
    ("optimizer.c", 0.0, "momsps", "optimizer.c "),
    ("sam.rho", -0.05, "sgd", r"sam.rho .* \[0.0, inf\)"),
    ("sam.lam", "half", "sgd", "sam.lam must be a number in .*'1/t' or '1-1/t'"),
    ("sam.lam", "1.5", "sgd", "sam.lam"),
    ("sam.every_k", 0, "sgd", "sam.every_k"),
    ("batch_size", 0, "sgd", r"batch_size must be a whole number in \[1.0, inf\)"),
    ("num_steps", 0, "sgd", r"num_steps must be a whole number in \[1.0, inf\)"),
    ("log_every", 0, "sgd", "log_every"),
    ("eval_every", -1, "sgd", "eval_every"),
    ("checkpoint_every", -1, "sgd", r"checkpoint_every .*\[0.0, inf\)"),
    ("seed", -1, "sgd", "seed"),
    ("data_seed", -1, "sgd", "data_seed"),
    ("num_devices", 4096, "sgd", "num_devices=4096 but only"),
    ("hessian.num_iterations", -1, "sgd", "hessian.num_iterations"),
    ("hessian.tol", 0.0, "sgd", r"hessian.tol .*\(0.0, inf\)"),
    ("divergence_threshold", 0.0, "sgd", "divergence_threshold"),
    ("schedule", "linear", "sgd", "schedule must be one of constant, cosine"),
    ("dataset", "mnist", "sgd",
     "dataset must be one of mnist1d, mnist1d_40k, teacher_student, digits, stdlib_chars"),
    ("model.name", "vit", "sgd", "model.name must be one of mlp, cnn, transformer"),
    ("model.name", "transformer", "sgd", "goes with"),
    ("model.num_heads", 3, "sgd", "model.width .* divisible by model.num_heads"),
]


@pytest.mark.parametrize("key, value, optimizer, message", BAD_VALUES,
                         ids=[f"{o}-{k}={v}" for k, v, o, _ in BAD_VALUES])
def test_bad_values_name_the_key_and_range(key, value, optimizer, message):
  with pytest.raises(checks.ConfigError, match=message) as error:
    checks.validate(_bad(key, value, optimizer))
  assert "\n" not in str(error.value)


def test_batch_size_must_divide_over_the_devices(monkeypatch):
  monkeypatch.setattr(checks.jax, "device_count", lambda: 4)
  monkeypatch.setattr(checks.jax, "devices", lambda: [checks.jax.local_devices()[0]] * 4)
  config = _bad("num_devices", 4)
  config.batch_size = 66
  with pytest.raises(checks.ConfigError, match="batch_size must be divisible by the 4 "
                                              "devices, got 66"):
    checks.validate(config)


def test_other_bad_configs_raise_clear_errors():
  config = default.get_config()
  config.optimizer.name = "adamm"
  with pytest.raises(ValueError, match="unknown optimizer 'adamm'; valid: .*momsps"):
    checks.validate(config)
  with pytest.raises(ValueError, match="has no hyperparameter"):
    optimizers.default_config("sgd", beta=0.9)
  config.optimizer = optimizers.default_config("sgd", nesterov=1)  # typed int by a file
  with pytest.raises(checks.ConfigError, match="optimizer.nesterov must be True or False"):
    checks.validate(config)


def test_sweep_errors():
  config = default.get_config()
  with pytest.raises(ValueError, match=r"sweep.reference names \['sgd'\], not arm labels"):
    config.sweep.reference = "sgd"
    sweep.expand(config)
  config.sweep.reference = "adam"
  config.sweep.arms[0]["reference"] = "sgd"
  with pytest.raises(ValueError, match=r"an arm's reference names \['sgd'\]"):
    sweep.expand(config)
  config.sweep.arms[0]["reference"] = "adam"
  config.sweep.metric = "test_accuracy"
  with pytest.raises(ValueError, match="sweep.metric must be one of accuracy, perplexity"):
    sweep.expand(config)
  config.sweep.metric = "accuracy"
  config.sweep.reference, config.sweep.untuned = "", ()
  config.sweep.arms = [dict(label="a", grid=(("optimizer.lr", (0.1,)),))]
  with pytest.raises(KeyError, match="optimizer has no key 'lr'; valid: learning_rate"):
    sweep.expand(config)
  config.sweep.arms = [dict(label="a", optimizers=dict(name="sgd"))]
  with pytest.raises(ValueError, match="bad sweep arm"):
    sweep.expand(config)
  config.sweep.arms = [dict(label="a"), dict(label="a")]
  with pytest.raises(ValueError, match="same label"):
    sweep.expand(config)
  with pytest.raises(KeyError, match="unknown sweep keys"):
    default.sweep_block(seed=(0,))


def test_expand_grid_and_max_grid_points():
  config = default.get_config()
  config.sweep.seeds = (0, 1)
  runs = sweep.expand(config)
  assert len(runs) == (1 + 3 + 2) * 2
  lrs = [r.config.optimizer.learning_rate for r in runs if r.arm == "sgd-momentum"]
  assert lrs == [0.03, 0.03, 0.1, 0.1, 0.3, 0.3]
  assert [r.seed for r in runs if r.arm == "adam"] == [0, 1, 0, 1]
  assert {r.config.optimizer.name for r in runs} == {"momsps", "sgd", "adam"}
  # The tuned arms are scheduled; the untuned Polyak method sets its own step.
  assert {r.arm: r.config.schedule for r in runs} == {
      "momsps (defaults)": "constant", "sgd-momentum": "cosine", "adam": "cosine"}
  config.sweep.max_grid_points = 1
  assert len(sweep.expand(config)) == 3 * 2


def test_momsps_smooth_gets_batches_per_epoch_from_the_data():
  import optax  # pylint: disable=import-outside-toplevel
  tx = optimizers.create_optimizer(optimizers.default_config("momsps_smooth"),
                                   batches_per_epoch=7)
  assert isinstance(tx, optax.GradientTransformation)
  assert "batches_per_epoch" not in optimizers.hyperparameters("momsps_smooth")


def test_cosine_schedule_warms_up_then_decays_and_is_logged_as_the_step_size():
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  total, lr = 200, 0.4
  warmup = 10  # 5% of 200
  steps = np.arange(total + 1)
  expected = np.where(steps < warmup, lr * steps / warmup,
                      lr * 0.5 * (1 + np.cos(np.pi * (steps - warmup) / (total - warmup))))
  schedule = optimizers.learning_rate_schedule(lr, "cosine", total)
  np.testing.assert_allclose([schedule(t) for t in steps], expected, rtol=1e-5, atol=1e-7)
  assert optimizers.learning_rate_schedule(lr, "constant", total)(123) == lr
  # SGD under the schedule: its step t is -schedule(t) * gradient, and the state's one
  # step_size field (what the runner logs) is the rate that step used.
  tx = optimizers.create_optimizer(optimizers.default_config("sgd", learning_rate=lr,
                                                             momentum=0.0),
                                   total_steps=total, schedule="cosine")
  params = {"w": np.ones(3, np.float32)}
  state = tx.init(params)
  for t in range(12):
    updates, state = tx.update({"w": np.full(3, 2.0, np.float32)}, state, params)
    np.testing.assert_allclose(updates["w"], -2.0 * expected[t], rtol=1e-5, atol=1e-7)
    found = optax.tree_utils.tree_get_all_with_path(state, "step_size")
    assert len(found) == 1
    np.testing.assert_allclose(jax.device_get(found[0][1]), expected[t], rtol=1e-5)
  # A Polyak method keeps its own step size: no second field.
  polyak = optimizers.create_optimizer(optimizers.default_config("momo"), total_steps=total,
                                       schedule="cosine")
  assert not optax.tree_utils.tree_get_all_with_path(polyak.init(params), "step_size")
