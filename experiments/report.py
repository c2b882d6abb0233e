"""A suite's report, built from its ``summary.json`` alone: ``results.md`` and the plots.

``python -m experiments.report --summary experiments/results/<suite>/summary.json``
rebuilds both next to the summary (or in ``--out``) without the raw runs.

How the report chooses and compares:

* Selection on validation. Each arm's config (grid point) is the one with the best mean
  validation metric over seeds (accuracy: highest; perplexity: lowest), configs with a
  diverged seed ranked last. The test split is evaluated for every config but reported
  only for the chosen ones (the table of all configs shows it, marked as not used).
* Paired comparisons. A seed fixes the initialization and the batch order in every arm,
  so arms are compared seed by seed: the mean of the per-seed differences of the test
  metric (arm minus reference) with its 95% paired-t interval (:mod:`experiments.stats`).
  Every arm is compared with its reference (``sweep.reference``, or the arm's own
  ``reference``), and every untuned arm with the best tuned arm; Holm's correction runs
  over all the comparisons of the report. An arm is called better or worse only when the
  Holm-adjusted p-value is below 0.05, and then its interval excludes 0.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from experiments import stats
from experiments import workdir as workdir_lib

METRICS = ("accuracy", "perplexity", "loss")  # loss: the regression suites' mean squared error
HIGHER_IS_BETTER = {"accuracy": True, "perplexity": False, "loss": False}
DIGITS = {"accuracy": 2, "perplexity": 3, "loss": 5}  # decimals of a metric in the tables
CONFIDENCE = 0.95
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.md"
PLOTS = ("curves.png", "step_size.png", "final_metrics.png")


# --- numbers over seeds ------------------------------------------------------------------
def values(config: dict, key: str, scale: float = 1.0) -> np.ndarray:
  """``final[key]`` of each seed's run (NaN where null), times ``scale``."""
  raw = [run["final"].get(key) for run in config["runs"]]
  return np.array([math.nan if v is None else v * scale for v in raw], np.float64)


def num_diverged(config: dict) -> int:
  return sum(bool(run["final"]["diverged"]) for run in config["runs"])


def _scale(metric: str) -> float:
  return 100.0 if metric == "accuracy" else 1.0


def _mean(config: dict, key: str) -> float:
  v = values(config, key)
  return float(v.mean()) if np.all(np.isfinite(v)) else math.nan


def _rank(config: dict, metric: str) -> tuple[int, float]:
  """Sort key, smallest is best: diverged seeds first, then the validation mean."""
  mean = _mean(config, f"validation_{metric}")
  if not math.isfinite(mean):
    return (num_diverged(config), math.inf)
  return (num_diverged(config), -mean if HIGHER_IS_BETTER[metric] else mean)


def choose(configs: list[dict], metric: str) -> dict[str, dict]:
  """``{arm: chosen config}``: each arm's best config on the validation split."""
  arms: dict[str, list[dict]] = {}
  for c in configs:
    arms.setdefault(c["arm"], []).append(c)
  return {arm: min(group, key=lambda c: _rank(c, metric)) for arm, group in arms.items()}


def best_tuned_arm(summary: dict, chosen: dict[str, dict]) -> str | None:
  """The tuned arm whose chosen config is best on validation (None: no tuned arm)."""
  tuned = [arm for arm in chosen if arm not in summary["sweep"]["untuned"]]
  if not tuned:
    return None
  return min(tuned, key=lambda arm: _rank(chosen[arm], summary["sweep"]["metric"]))


def comparison_pairs(summary: dict, chosen: dict[str, dict]) -> list[tuple[str, str]]:
  """``(arm, reference)`` pairs: each arm vs its reference, untuned arms vs best tuned."""
  sweep = summary["sweep"]
  pairs = []
  for arm in sweep["arms"]:
    reference = arm.get("reference", sweep["reference"])
    if reference and reference != arm["label"]:
      pairs.append((arm["label"], reference))
  top = best_tuned_arm(summary, chosen)
  if top is not None:
    pairs += [(arm, top) for arm in sweep["untuned"] if (arm, top) not in pairs]
  return pairs


def compare(summary: dict, chosen: dict[str, dict]) -> dict[tuple[str, str], stats.Comparison]:
  """Paired test-metric comparisons of :func:`comparison_pairs`, Holm over all of them.

  A run that diverged has no value (its pair is left out and its arm is marked
  ``diverged``). Each pair enters :func:`experiments.stats.compare_arms` as its per-seed
  differences against a zero reference, so one call gives every pair's interval and one
  Holm correction over the report; seeds where the reference diverged are left out.
  """
  metric = summary["sweep"]["metric"]
  key, scale = f"test_{metric}", _scale(metric)

  def by_seed(arm: str) -> dict[int, float]:
    config = chosen[arm]
    v = values(config, key, scale)
    return {run["seed"]: (math.nan if run["final"]["diverged"] else float(x))
            for run, x in zip(config["runs"], v)}

  pairs = comparison_pairs(summary, chosen)
  differences: dict[str, dict[int, float]] = {"": {}}
  for arm, reference in pairs:
    a, r = by_seed(arm), by_seed(reference)
    seeds = [s for s in a if s in r and math.isfinite(r[s])]
    differences[f"{arm}\n{reference}"] = {s: a[s] - r[s] for s in seeds}
    differences[""].update({s: 0.0 for s in seeds})
  if not pairs:
    return {}
  result = stats.compare_arms(differences, "", confidence=CONFIDENCE,
                              higher_is_better=HIGHER_IS_BETTER[metric])
  return {tuple(k.split("\n")): v for k, v in result.items()}


# --- formatting ----------------------------------------------------------------------------
def _fmt(v: np.ndarray, digits: int) -> str:
  """Mean ± std (ddof=1) of the finite values; how many are missing, if any."""
  finite = v[np.isfinite(v)]
  if not finite.size:
    return "n/a"
  mean = float(finite.mean())
  std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
  text = (f"{mean:.2e} ± {std:.1e}" if abs(mean) >= 1e4 or 0 < abs(mean) < 10 ** -digits
          else f"{mean:.{digits}f} ± {std:.{digits}f}")
  return text + (f" ({finite.size} of {v.size})" if finite.size < v.size else "")


def cell(config: dict, key: str, scale: float, digits: int) -> str:
  """A table cell: mean ± std over seeds, or ``off`` (probe off) / ``diverged``."""
  if key == "hessian_top_eigenvalue":
    probes = {run["final"]["hessian_probe"] for run in config["runs"]}
    if probes == {"off"}:
      return "off"
  v = values(config, key, scale)
  if num_diverged(config) == len(config["runs"]) and key != "train_time_s":
    return "diverged"
  return _fmt(v, digits)


def _columns(metric: str, chosen_only: bool) -> list[tuple[str, str, float, int]]:
  unit = " (%)" if metric == "accuracy" else ""
  digits = DIGITS[metric]
  test = f"test {metric}{unit}" + ("" if chosen_only else " (not used to choose)")
  return [(f"validation {metric}{unit}", f"validation_{metric}", _scale(metric), digits),
          (test, f"test_{metric}", _scale(metric), digits),
          ("test loss", "test_loss", 1.0, 4), ("final train loss", "train_loss", 1.0, 4),
          ("top Hessian eig.", "hessian_top_eigenvalue", 1.0, 2),
          ("wall time / run (s)", "train_time_s", 1.0, 1)]


def _name(config: dict) -> str:
  n = num_diverged(config)
  return config["label"] + (f" ({n} of {len(config['runs'])} diverged)" if n else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
          + ["| " + " | ".join(row) + " |" for row in rows])


def _unit(metric: str) -> str:
  return " pp" if metric == "accuracy" else ""


def _p(p: float) -> str:
  return "n/a" if not math.isfinite(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def chosen_table(summary: dict, chosen: dict[str, dict], comparisons: dict) -> list[str]:
  """One row per arm: its chosen config, the metrics, and Δ vs its reference."""
  metric = summary["sweep"]["metric"]
  cols = _columns(metric, chosen_only=True)
  head = (["arm", "chosen config", "seeds"] + [c[0] for c in cols[:2]]
          + [f"Δ test{' (pp)' if metric == 'accuracy' else ''} vs reference [95% CI]",
             "reference", "p (Holm)", "verdict"] + [c[0] for c in cols[2:]])
  references: dict[str, str] = {}
  for arm, ref in comparisons:  # an arm's own reference first, then the best tuned arm
    references.setdefault(arm, ref)
  rows = []
  for arm, config in chosen.items():
    cells = [cell(config, key, scale, digits) for _, key, scale, digits in cols]
    if arm in references:
      c = comparisons[(arm, references[arm])]
      delta = [stats.format_interval(c, DIGITS[metric]),
               references[arm], _p(c.p_holm), c.verdict]
    else:
      delta = ["—", "(reference)" if arm in references.values() else "—", "—", "—"]
    rows.append([arm, _name(config) + f" (of {config['grid_size']})",
                 str(len(config["runs"]))] + cells[:2] + delta + cells[2:])
  return _table(head, rows)


def chosen_table_text(summary: dict) -> str:
  """The chosen-config table as printed by ``experiments.sweep``."""
  chosen = choose(summary["configs"], summary["sweep"]["metric"])
  return "\n".join(chosen_table(summary, chosen, compare(summary, chosen)))


def _sentence(arm: str, reference: str, c, chosen: dict, metric: str) -> str:
  digits = DIGITS[metric]
  what = (f"test {metric} {stats.format_interval(c, digits)}{_unit(metric)} "
          f"(n={c.n} seeds, Holm p={_p(c.p_holm)})")
  label = chosen[reference]["label"]
  ref = reference if label == reference else f"{reference} ({label})"
  if c.verdict in ("better", "worse"):
    return f"- **{arm}** is {c.verdict} than {ref}: {what}."
  if c.verdict == "diverged" and not c.n:
    return f"- **{arm}** diverged on every seed ({c.num_diverged}): not compared with {ref}."
  if c.verdict == "diverged":
    return (f"- **{arm}** diverged on {c.num_diverged} seed(s), left out of the comparison "
            f"with {ref}; on the other seeds: {what}.")
  return f"- **{arm}** vs {ref}: {c.verdict}; {what}."


def _cost_table(summary: dict) -> list[str]:
  arms: dict[str, list[dict]] = {}
  for c in summary["configs"]:
    if c["arm"] not in summary["sweep"]["untuned"]:
      arms.setdefault(c["arm"], []).append(c)
  rows = [[arm, str(len(group)), str(sum(len(c["runs"]) for c in group)),
           f"{sum(np.nansum(values(c, 'train_time_s')) for c in group):.0f}"]
          for arm, group in arms.items()]
  return _table(["tuned arm", "grid points", "runs", "total time (s)"], rows)


def results_markdown(summary: dict) -> str:
  """The text of ``results.md``."""
  sweep, config, env = summary["sweep"], summary["config"], summary["environment"]
  metric, configs = sweep["metric"], summary["configs"]
  chosen = choose(configs, metric)
  comparisons = compare(summary, chosen)
  first = configs[0]["runs"][0]["final"]
  total = sum(float(np.nansum(values(c, "train_time_s"))) for c in configs)
  runs = sum(len(c["runs"]) for c in configs)
  trained = summary.get("runs_trained", 0)
  invocation = (f"the invocation that wrote this trained {trained} of them in "
                f"{summary['sweep_wall_time_s']:.0f} s" if trained else
                "this report was rebuilt from finished runs")
  better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
  lines = [
      f"# Suite `{sweep['name']}`", "", "```", summary["command"] or "(run from Python)",
      "```", "",
      f"- {runs} runs: {len(configs)} configs × {len(sweep['seeds'])} seeds "
      f"{tuple(sweep['seeds'])}; cells are mean ± std (ddof=1) over seeds.",
      f"- Data: `{config['dataset']}` (fingerprint {first['data_fingerprint']}; "
      f"{first.get('num_train', '?')} train / {first.get('num_validation', '?')} "
      f"validation (data seed {config['data_seed']}) / {first.get('num_test', '?')} test "
      f"examples), model `{config['model']['name']}`, batch {config['batch_size']}, "
      f"{config['num_steps']} steps (per-arm overrides below).",
      f"- Machine: {env['device_kind']} × {env['devices']}, JAX {env['jax_version']}, "
      f"Python {env['python']}, {env['date']}; code "
      f"{', '.join(env.get('code_versions') or ['unrecorded'])} (the commits the runs were "
      "trained at; \"unrecorded\": trained before runs recorded it).",
      f"- Cost: {total:.0f} s of training summed over runs (first-step compilation "
      f"included); {invocation}.",
      f"- Selection: each arm's config is the one with the {better} mean validation "
      f"{metric} (configs with a diverged seed last); test is reported for the chosen "
      "configs.",
      f"- Comparisons: paired by seed (same initialization and batch order in every arm): "
      f"Δ = mean of the per-seed differences of test {metric}, arm − reference, with its "
      f"{CONFIDENCE:.0%} paired-t interval; p-values Holm-adjusted over the "
      f"{len(comparisons)} comparisons of this report. \"better\"/\"worse\" only where "
      "the adjusted p < 0.05 (the interval then excludes 0).",
      f"- Diverged: a logged train loss (mean over {config['log_every']} steps) not finite "
      f"or above {config['divergence_threshold']:g}; training stops there, the run is "
      "left out of the intervals and its arm's verdict says so.",
      "- Top Hessian eigenvalue: power iteration with HVPs on a fixed training batch of "
      f"{config['hessian']['batch_size']}, BatchNorm in eval mode (\"off\": probe "
      "switched off).", "",
  ]
  if sweep.get("description"):
    lines += [sweep["description"], ""]
  lines += ["## Chosen config of each arm (selected on validation, reported on test)", ""]
  lines += chosen_table(summary, chosen, comparisons) + [""]
  if comparisons:
    lines += ["## Comparisons", ""]
    lines += [_sentence(arm, ref, c, chosen, metric)
              for (arm, ref), c in comparisons.items()] + [""]
  top = best_tuned_arm(summary, chosen)
  if sweep["untuned"] and top is not None:
    lines += [f"Untuned arms (one config each): {', '.join(sweep['untuned'])}; best tuned "
              f"arm on validation: {top} ({chosen[top]['label']}). Cost of the tuned "
              "grids (runs = grid points × seeds; time = summed training wall time):", ""]
    lines += _cost_table(summary) + [""]
  lines += ["## All configs", ""]
  cols = _columns(metric, chosen_only=False)
  lines += _table(["config", "seeds"] + [c[0] for c in cols],
                  [[_name(c), str(len(c["runs"]))]
                   + [cell(c, key, scale, digits) for _, key, scale, digits in cols]
                   for c in configs]) + [""]
  overrides = [f"- {arm['label']}: " + ", ".join(f"{k}={v}"
                                                for k, v in arm["overrides"].items())
               for arm in sweep["arms"] if arm.get("overrides")]
  if overrides:
    lines += ["Per-arm overrides:", ""] + overrides + [""]
  lines += ["Plots: `curves.png` (train loss and validation metric of each arm's chosen "
            "config), `step_size.png`, `final_metrics.png` (every config). All numbers "
            "here come from `summary.json` (per config and seed: final metrics at full "
            "precision, downsampled curves); `python -m experiments.report --summary "
            "summary.json` rebuilds this file and the plots from it.", ""]
  return "\n".join(lines)


def write_all(summary: dict, folder: str) -> None:
  """Writes ``results.md`` and the plots of ``summary`` into ``folder``."""
  from experiments import plots  # pylint: disable=import-outside-toplevel  (matplotlib)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, RESULTS_FILE), "w", encoding="utf-8") as f:
    f.write(results_markdown(summary))
  plots.write_all(summary, folder, choose(summary["configs"], summary["sweep"]["metric"]))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.report",
      description="Rebuild a suite's results.md and plots from its summary.json.")
  parser.add_argument("--summary", required=True, help="path to a suite's summary.json")
  parser.add_argument("--out", help="output folder (default: the summary's folder)")
  args = parser.parse_args(argv)
  summary = workdir_lib.read_json(args.summary)
  folder = args.out or os.path.dirname(os.path.abspath(args.summary))
  write_all(summary, folder)
  print(f"wrote {RESULTS_FILE} and {', '.join(PLOTS)} in {folder}")


if __name__ == "__main__":
  main()
