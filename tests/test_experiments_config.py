"""Configs, overrides and the errors for bad ones (command line and Python)."""

import os
import subprocess
import sys

import pytest

from configs import default, stdlib_lm
from experiments import cli, optimizers, sweep, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                      if f.endswith(".py") and f != "__init__.py")


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)


def test_unknown_key_and_bad_value_on_the_command_line():
  out = _cli("--config", "configs/default.py", "--config.optimizer.lr=0.1",
             "--config.num_stepz=3")
  assert out.returncode != 0
  assert "config.optimizer has no key 'lr'" in out.stderr
  assert "valid keys: learning_rate, momentum, name, nesterov, weight_decay" in out.stderr
  assert "the config has no key 'num_stepz'" in out.stderr and "num_steps" in out.stderr
  out = _cli("--config", "configs/default.py", "--config.num_steps=many")
  assert out.returncode != 0 and "--config.num_steps=many" in out.stderr
  out = _cli("--config", "configs/default.py", "--config.optimizer.name=adam")
  assert out.returncode != 0
  assert "optimizer 'adam' does not take ['momentum', 'nesterov', 'weight_decay']" in (
      out.stderr)
  assert "--config <config file>:adam" in out.stderr


def test_check_override_lists_valid_keys():
  config = default.get_config()
  assert cli.check_override(config, "optimizer.learning_rate") is None
  assert "valid keys: batch_size" in cli.check_override(config, "batch")
  assert "is a value" in cli.check_override(config, "seed.x")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_loads_and_validates(name):
  config = cli.load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  train.validate(config)
  runs = sweep.expand(config)
  assert runs and len({r.run_id for r in runs}) == len(runs)
  for run in runs:
    train.validate(run.config)


def test_config_string_switches_optimizer():
  config = cli.load_config(os.path.join(ROOT, "configs", "default.py:momsps"))
  assert config.optimizer.to_dict() == {"name": "momsps", **optimizers.hyperparameters(
      "momsps")}
  assert stdlib_lm.get_config("sgd").optimizer.name == "sgd"


def test_bad_configs_raise_clear_errors():
  config = default.get_config()
  config.optimizer.name = "adamm"
  with pytest.raises(ValueError, match="unknown optimizer 'adamm'; valid: .*momsps"):
    train.validate(config)
  config = default.get_config()
  config.sam.lam = "half"
  with pytest.raises(ValueError, match="'1/t' or '1-1/t'"):
    train.validate(config)
  config = default.get_config()
  config.model.name = "transformer"
  with pytest.raises(ValueError, match="goes with"):
    train.validate(config)
  config = default.get_config()
  config.model.name = "vit"
  with pytest.raises(ValueError, match="valid: mlp, cnn, transformer"):
    train.validate(config)
  with pytest.raises(ValueError, match="has no hyperparameter"):
    optimizers.default_config("sgd", beta=0.9)


def test_sweep_errors():
  config = default.get_config()
  with pytest.raises(ValueError, match=r"sweep.reference names \['sgd'\], not arm labels"):
    config.sweep.reference = "sgd"
    sweep.expand(config)
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
  assert len(runs) == (1 + 2 + 2) * 2
  lrs = [r.config.optimizer.learning_rate for r in runs if r.arm == "sgd-momentum"]
  assert lrs == [0.03, 0.03, 0.3, 0.3]
  assert {r.config.optimizer.name for r in runs} == {"momsps", "sgd", "adam"}
  config.sweep.max_grid_points = 1
  assert len(sweep.expand(config)) == 3 * 2


def test_momsps_smooth_gets_batches_per_epoch_from_the_data():
  import optax  # pylint: disable=import-outside-toplevel
  tx = optimizers.create_optimizer(optimizers.default_config("momsps_smooth"),
                                   batches_per_epoch=7)
  assert isinstance(tx, optax.GradientTransformation)
  assert "batches_per_epoch" not in optimizers.hyperparameters("momsps_smooth")
