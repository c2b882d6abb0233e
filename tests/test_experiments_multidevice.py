"""``num_devices`` is a config key: 2 host devices (own process) match one device."""

import json
import os
import subprocess
import sys

import numpy as np

from configs import default
from experiments import train
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
