"""``num_devices`` and ``mesh.fsdp`` are config keys: 2 devices and FSDP on 8 (own process) match one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import default
from configs import lm_fsdp
from experiments import train
from experiments.checks import ConfigError, validate
from experiments import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_devices_match_one(tmp_path):
  overrides = {"num_steps": 10, "log_every": 5, "eval_every": 5, "checkpoint_every": 0}
  workdir = str(tmp_path / "two")
  # A fresh process: the device count is fixed when JAX starts, and other tests keep one.
  subprocess.run([sys.executable, "-m", "experiments.train", "--config",
                  "configs/default.py", "--workdir", workdir, "--config.num_devices=2",
                  "--config.hessian.num_iterations=0"]
                 + [f"--config.{k}={v}" for k, v in overrides.items()],
                 cwd=ROOT, check=True, capture_output=True, timeout=300)
  two = workdir_lib.read_json(os.path.join(workdir, workdir_lib.SUMMARY_FILE))
  assert two["devices"] == 2

  config = default.get_config()
  config.update(overrides)
  config.hessian.num_iterations = 0
  one = train.train_and_evaluate(config, str(tmp_path / "one"))
  assert one["devices"] == 1
  records = {}
  for name in ("one", "two"):
    with open(os.path.join(str(tmp_path / name), workdir_lib.METRICS_FILE)) as f:
      records[name] = [json.loads(line) for line in f]
  # Same global batch, same maths (BatchNorm statistics are global under jit): only the
  # order of floating-point reductions differs.
  for a, b in zip(records["one"], records["two"]):
    assert a["step"] == b["step"] and a["split"] == b["split"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-3)
  np.testing.assert_allclose(one["test_loss"], two["test_loss"], rtol=2e-2)


def test_lm_fsdp_on_eight_devices_matches_one(tmp_path):
  # A narrow model keeps it fast; its MLP kernels (64 x 256) are still split 4 ways.
  overrides = {"num_steps": 4, "log_every": 2, "eval_every": 4, "checkpoint_every": 2,
               "model.width": 64, "model.depth": 1, "batch_size": 64,
               "eval_batch_size": 64, "train_eval_examples": 64,
               "hessian.num_iterations": 0}
  workdir = str(tmp_path / "fsdp")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-m", "experiments.train", "--config",
                  "configs/lm_fsdp.py", "--workdir", workdir]
                 + [f"--config.{k}={v}" for k, v in overrides.items()],
                 cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
  fsdp = workdir_lib.read_json(os.path.join(workdir, workdir_lib.SUMMARY_FILE))
  assert fsdp["devices"] == 8 and fsdp["mesh"] == {"data": 2, "fsdp": 4}, fsdp

  config = lm_fsdp.get_config()
  config.update_from_flattened_dict(overrides)
  config.num_devices, config.mesh.fsdp = 1, 1
  one = train.train_and_evaluate(config, str(tmp_path / "one"))
  assert one["mesh"] == {"data": 1, "fsdp": 1}
  records = {}
  for name in ("one", "fsdp"):
    with open(os.path.join(str(tmp_path / name), workdir_lib.METRICS_FILE)) as f:
      records[name] = [json.loads(line) for line in f]
  assert len(records["one"]) == len(records["fsdp"]) > 2
  for a, b in zip(records["one"], records["fsdp"]):
    assert a["step"] == b["step"] and a["split"] == b["split"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
  np.testing.assert_allclose(one["test_loss"], fsdp["test_loss"], rtol=1e-4)


def test_mesh_fsdp_is_checked():
  config = lm_fsdp.get_config()
  config.num_devices = 1
  for fsdp, message in ((0, r"mesh.fsdp must be a whole number in \[1.0, inf\)"),
                        (4, "mesh.fsdp must divide the 1 devices")):
    config.mesh.fsdp = fsdp
    with pytest.raises(ConfigError, match=message):
      validate(config)
