"""The report chooses on validation, compares paired over seeds, and needs only summary.json."""

import math
import os

import matplotlib.image
import numpy as np
from scipy import stats as scipy_stats

from experiments import report
from experiments import workdir as workdir_lib

SEEDS = (0, 1, 2)


def _config(label, arm, validation, test, *, diverged=(), probe="on", grid_size=1):
  runs = []
  for seed, v, t in zip(SEEDS, validation, test):
    final = {"validation_accuracy": v, "test_accuracy": t, "test_loss": 0.1,
             "train_loss": 0.01, "hessian_probe": probe,
             "hessian_top_eigenvalue": 2.0 if probe == "on" else None,
             "train_time_s": 1.5, "diverged": seed in diverged, "steps": 10,
             "data_fingerprint": "abc", "device_kind": "cpu", "devices": 1,
             "jax_version": "0.0", "num_train": 1152, "num_validation": 288,
             "num_test": 357}
    curves = {"train": {"step": [5, 10], "loss": [1.0, 0.5], "step_size": [0.1, 0.1]},
              "validation": {"step": [5, 10], "accuracy": [v / 2, v]},
              "test": {"step": [5, 10], "accuracy": [t / 2, t]}}
    runs.append({"seed": seed, "final": final, "curves": curves})
  return {"label": label, "arm": arm, "grid_size": grid_size, "runs": runs}


def _summary(configs, arms, reference, untuned=()):
  return {
      "command": "python -m experiments.sweep --config configs/x.py",
      "config": {"dataset": "digits", "data_seed": 0, "model": {"name": "cnn"},
                 "batch_size": 64, "num_steps": 10, "log_every": 5,
                 "divergence_threshold": 1000.0, "hessian": {"batch_size": 512}},
      "sweep": {"name": "fake", "seeds": list(SEEDS), "metric": "accuracy",
                "reference": reference, "untuned": list(untuned), "arms": arms,
                "description": ""},
      "environment": {"device_kind": "cpu", "devices": 1, "jax_version": "0.0",
                      "python": "3", "date": "today"},
      "sweep_wall_time_s": 9.0, "runs_trained": 0, "configs": configs,
  }


def _paired_t(a, b):
  """The 95% paired-t interval of a - b, in percentage points (by hand)."""
  d = (np.asarray(a) - np.asarray(b)) * 100
  half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
  return d.mean(), d.mean() - half, d.mean() + half


# SGD's best learning rate on TEST is 0.1, on VALIDATION 0.3: the report must take 0.3.
SGD_01 = _config("sgd lr=0.1", "sgd", [0.90, 0.91, 0.92], [0.99, 0.99, 0.99], grid_size=2)
SGD_03 = _config("sgd lr=0.3", "sgd", [0.95, 0.95, 0.96], [0.93, 0.94, 0.95], grid_size=2)
SPS = _config("sps", "sps", [0.94, 0.94, 0.94], [0.97, 0.97, 0.99])
ADAM = _config("adam", "adam", [0.90, 0.93, 0.92], [0.92, 0.95, 0.94])
ARMS = [{"label": "sgd"}, {"label": "sps"}, {"label": "adam"}]


def test_each_arm_is_chosen_on_validation_not_on_test():
  summary = _summary([SGD_01, SGD_03, SPS, ADAM], ARMS, reference="sgd")
  chosen = report.choose(summary["configs"], "accuracy")
  assert chosen["sgd"]["label"] == "sgd lr=0.3"
  text = report.results_markdown(summary)
  chosen_section = text.split("## Chosen config")[1].split("## Comparisons")[0]
  assert "| sgd | sgd lr=0.3 (of 2) | 3 |" in chosen_section
  assert "lr=0.1" not in chosen_section
  # The comparisons pair each arm's test values with the CHOSEN sgd config's, seed by seed.
  comparisons = report.compare(summary, chosen)
  mean, low, high = _paired_t([0.97, 0.97, 0.99], [0.93, 0.94, 0.95])
  c = comparisons[("sps", "sgd")]
  np.testing.assert_allclose([c.mean, c.low, c.high], [mean, low, high], rtol=1e-12)
  assert c.n == 3 and c.verdict == "better"
  assert f"+{mean:.2f} [+{low:.2f}, +{high:.2f}]" in chosen_section


def test_better_is_said_only_where_the_holm_adjusted_interval_excludes_zero():
  summary = _summary([SGD_01, SGD_03, SPS, ADAM], ARMS, reference="sgd")
  comparisons = report.compare(summary, report.choose(summary["configs"], "accuracy"))
  sps, adam = comparisons[("sps", "sgd")], comparisons[("adam", "sgd")]
  # Holm over the two comparisons: the smaller p doubled, the larger kept (or raised).
  assert math.isclose(sps.p_holm, min(1.0, 2 * sps.p_value))
  assert adam.p_holm == max(adam.p_value, sps.p_holm)
  assert adam.verdict == "no detectable difference" and adam.low < 0 < adam.high
  sentences = report.results_markdown(summary).split("## Comparisons")[1].split("##")[0]
  lines = [line for line in sentences.splitlines() if line.startswith("- ")]
  assert lines[0].startswith("- **sps** is better than sgd (sgd lr=0.3): test accuracy ")
  assert lines[1].startswith("- **adam** vs sgd (sgd lr=0.3): no detectable difference;")
  assert "better" not in lines[1]


def test_per_arm_references_untuned_arms_and_one_holm_family():
  arms = [{"label": "sgd"}, {"label": "adam", "reference": ""},
          {"label": "eadam", "reference": "adam"}, {"label": "sps"}]
  eadam = _config("eadam", "eadam", [0.9, 0.9, 0.9], [0.95, 0.96, 0.95])
  summary = _summary([SGD_01, SGD_03, ADAM, eadam, SPS], arms, reference="sgd",
                     untuned=("sps",))
  chosen = report.choose(summary["configs"], "accuracy")
  assert report.best_tuned_arm(summary, chosen) == "sgd"  # 0.953 on validation
  assert report.comparison_pairs(summary, chosen) == [("eadam", "adam"), ("sps", "sgd")]
  comparisons = report.compare(summary, chosen)
  mean, _, _ = _paired_t([0.95, 0.96, 0.95], [0.92, 0.95, 0.94])
  assert math.isclose(comparisons[("eadam", "adam")].mean, mean, rel_tol=1e-12)
  p = sorted(c.p_value for c in comparisons.values())
  assert sorted(c.p_holm for c in comparisons.values()) == [min(1, 2 * p[0]),
                                                            min(1, max(2 * p[0], p[1]))]
  assert "Untuned arms (one config each): sps; best tuned arm on validation: sgd" in (
      report.results_markdown(summary))


def test_diverged_runs_and_a_probe_that_is_off():
  sgd = _config("sgd", "sgd", [0.95, 0.95, 0.96], [0.93, 0.94, 0.95], probe="off")
  bad = _config("sps", "sps", [0.99, 0.99, 0.10], [0.99, 0.99, 0.10], diverged=(2,),
                probe="off")
  summary = _summary([sgd, bad], [{"label": "sgd"}, {"label": "sps"}], reference="sgd")
  c = report.compare(summary, report.choose(summary["configs"], "accuracy"))[("sps", "sgd")]
  assert c.verdict == "diverged" and c.num_diverged == 1 and c.n == 2
  text = report.results_markdown(summary)
  all_configs = text.split("## All configs")[1]
  assert "| sgd | 3 |" in all_configs and "| sps (1 of 3 diverged) | 3 |" in all_configs
  assert all_configs.count("| off |") == 2
  assert "- **sps** diverged on 1 seed(s), left out of the comparison with sgd; on the " \
         "other seeds: test accuracy " in text
  # A config with a diverged seed ranks below every config without one.
  good = _config("sps b", "sps", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
  assert report.choose([bad, good], "accuracy")["sps"]["label"] == "sps b"


def test_the_report_and_plots_rebuild_from_the_summary_alone(tmp_path):
  summary = _summary([SGD_01, SGD_03, SPS, ADAM], ARMS, reference="sgd")
  path = str(tmp_path / "summary.json")
  workdir_lib.write_json(path, summary)
  out = tmp_path / "out"
  report.main(["--summary", path, "--out", str(out)])
  with open(out / report.RESULTS_FILE, encoding="utf-8") as f:
    assert f.read() == report.results_markdown(summary)
  for png in report.PLOTS:
    image = matplotlib.image.imread(os.path.join(out, png))
    assert image.ndim == 3 and image.shape[0] > 100


def test_a_loss_metric_is_chosen_lowest_and_compared_lower_is_better():
  def with_loss(config, validation, test):
    config = {**config, "runs": [
        {**run, "final": {**run["final"], "validation_loss": v, "test_loss": t}}
        for run, v, t in zip(config["runs"], validation, test)]}
    return config
  low = with_loss(SGD_01, [1e-3, 2e-3, 1e-3], [4e-4, 5e-4, 6e-4])
  high = with_loss(SGD_03, [3e-3, 3e-3, 4e-3], [1e-4, 1e-4, 1e-4])  # best on test only
  sps = with_loss(SPS, [5e-4] * 3, [2e-4, 3e-4, 3e-4])
  summary = _summary([low, high, sps], [{"label": "sgd"}, {"label": "sps"}], "sgd")
  summary["sweep"]["metric"] = "loss"
  chosen = report.choose(summary["configs"], "loss")
  assert chosen["sgd"]["label"] == "sgd lr=0.1"  # the lower validation loss
  c = report.compare(summary, chosen)[("sps", "sgd")]
  d = np.array([2e-4, 3e-4, 3e-4]) - np.array([4e-4, 5e-4, 6e-4])
  half = scipy_stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
  np.testing.assert_allclose([c.mean, c.low, c.high], [d.mean(), d.mean() - half,
                                                       d.mean() + half], rtol=1e-9)
  assert c.verdict == "better"  # lower loss, interval below 0 (Holm over one comparison)
  text = report.results_markdown(summary)
  assert "−0.00023 [−0.00038, −0.00009]" in text  # 5 decimals: MSEs are small
  assert "| sgd | sgd lr=0.1 (of 2) | 3 | 0.00133 ± 0.00058 |" in text
