"""Aggregate a sweep's runs over seeds and write ``results.md`` and ``summary.json``.

Mean ± standard deviation over seeds (sample std, ``ddof=1``; 0 for one seed). "Best"
means the highest mean test accuracy, or the lowest mean test perplexity for language
models (``config.sweep.metric``); selection uses the test split, as the papers do, so the
best-of-grid numbers are optimistic for the tuned baselines, not for untuned methods.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform

import jax
import numpy as np

from experiments import train as train_lib

METRICS = ("test_accuracy", "test_perplexity", "test_loss", "train_loss",
           "hessian_top_eigenvalue", "train_time_s")
HIGHER_IS_BETTER = {"test_accuracy": True, "test_perplexity": False, "test_loss": False,
                    "train_loss": False}


def _stats(values: list[float]) -> dict:
  arr = np.asarray(values, np.float64)
  finite = arr[np.isfinite(arr)]
  std = float(np.std(arr, ddof=1)) if len(arr) > 1 else 0.0
  return {"mean": float(np.mean(arr)), "std": std, "values": [float(v) for v in arr],
          "finite": len(finite)}


def collect(workdir: str, runs) -> dict:
  """Per-config statistics and curves over seeds, in sweep order."""
  groups: dict[str, dict] = {}
  for run in runs:
    run_dir = os.path.join(workdir, "runs", run.run_id)
    with open(os.path.join(run_dir, train_lib.SUMMARY_FILE)) as f:
      summary = json.load(f)
    g = groups.setdefault(run.label, {"label": run.label, "arm": run.arm,
                                      "grid_size": run.grid_size, "seeds": [],
                                      "summaries": [], "curves": []})
    g["seeds"].append(run.seed)
    g["summaries"].append(summary)
    with open(os.path.join(run_dir, train_lib.METRICS_FILE)) as f:
      records = [json.loads(line) for line in f if line.strip()]
    g["curves"].append(records)
  configs = []
  for g in groups.values():
    stats = {m: _stats([s[m] for s in g["summaries"]]) for m in METRICS}
    configs.append({"label": g["label"], "arm": g["arm"], "grid_size": g["grid_size"],
                    "seeds": g["seeds"], "stats": stats, "curves": g["curves"],
                    "diverged": sum(bool(s["diverged"]) for s in g["summaries"]),
                    "device_kind": g["summaries"][0]["device_kind"],
                    "data_fingerprint": g["summaries"][0]["data_fingerprint"]})
  return {"configs": configs}


def _score(config: dict, metric: str) -> float:
  """Sort key, larger is better; NaN (diverged) is worst."""
  value = config["stats"][metric]["mean"]
  if not math.isfinite(value):
    return -math.inf
  return value if HIGHER_IS_BETTER[metric] else -value


def best(configs: list[dict], metric: str) -> dict:
  return max(configs, key=lambda c: _score(c, metric))


def best_per_arm(configs: list[dict], metric: str) -> list[dict]:
  arms: dict[str, list[dict]] = {}
  for c in configs:
    arms.setdefault(c["arm"], []).append(c)
  return [best(group, metric) for group in arms.values()]


def _fmt(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
  mean, std = stats["mean"] * scale, stats["std"] * scale
  if not math.isfinite(mean):
    return "diverged" if stats["finite"] == 0 else f"nan ({stats['finite']} finite)"
  if abs(mean) >= 1e4 or (0 < abs(mean) < 10 ** -digits):
    return f"{mean:.2e} ± {std:.1e}"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _columns(metric: str):
  if metric == "test_perplexity":
    first = [("test perplexity", "test_perplexity", 1.0, 3)]
  else:
    first = [("test acc. (%)", "test_accuracy", 100.0, 2)]
  return first + [("test loss", "test_loss", 1.0, 4), ("final train loss", "train_loss",
                                                        1.0, 4),
                  ("top Hessian eig.", "hessian_top_eigenvalue", 1.0, 2),
                  ("wall time / run (s)", "train_time_s", 1.0, 1)]


def _table(configs: list[dict], metric: str, reference: dict | None) -> list[str]:
  cols = _columns(metric)
  head = ["config", "seeds"] + [c[0] for c in cols]
  if reference is not None:
    head.append(f"Δ vs {reference['label']}")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for c in configs:
    row = [c["label"] + (f" ({c['diverged']} diverged)" if c["diverged"] else ""),
           str(len(c["seeds"]))]
    row += [_fmt(c["stats"][key], scale, digits) for _, key, scale, digits in cols]
    if reference is not None:
      row.append(_delta(c, reference, metric))
    lines.append("| " + " | ".join(row) + " |")
  return lines


def _delta(c: dict, ref: dict, metric: str) -> str:
  a, b = c["stats"][metric], ref["stats"][metric]
  if c is ref:
    return "—"
  if not (math.isfinite(a["mean"]) and math.isfinite(b["mean"])):
    return "n/a"
  scale = 100.0 if metric == "test_accuracy" else 1.0
  diff = (a["mean"] - b["mean"]) * scale
  noise = math.hypot(a["std"], b["std"]) * scale
  mark = "" if abs(diff) > noise or not math.isfinite(noise) else " (within noise)"
  unit = " pp" if metric == "test_accuracy" else ""
  return f"{_number(diff)}{unit}{mark}"


def _number(x: float) -> str:
  """Signed, two decimals; scientific beyond 1e4 (a run that blew up)."""
  return f"{x:+.2f}" if abs(x) < 1e4 else f"{x:+.1e}"


def _untuned_section(configs, metric, untuned_arms) -> list[str]:
  tuned = [c for c in configs if c["arm"] not in untuned_arms]
  if not tuned:
    return []
  top = best(tuned, metric)
  scale, unit = (100.0, " pp") if metric == "test_accuracy" else (1.0, "")
  lines = ["## Untuned vs best tuned", "",
           f"Best tuned baseline: **{top['label']}** "
           f"({_fmt(top['stats'][metric], scale)}).", ""]
  for c in configs:
    if c["arm"] in untuned_arms:
      diff = (c["stats"][metric]["mean"] - top["stats"][metric]["mean"]) * scale
      lines.append(f"- **{c['label']}** (one run per seed, no tuning): "
                   f"{_fmt(c['stats'][metric], scale)}, {_number(diff)}{unit} vs the best "
                   f"tuned baseline.")
  lines += ["", "Cost of the grids the untuned methods replace (runs = grid points × "
            "seeds, time = summed training wall time):", "",
            "| tuned arm | grid points | runs | total time (s) | best config |",
            "|---|---|---|---|---|"]
  arms: dict[str, list[dict]] = {}
  for c in tuned:
    arms.setdefault(c["arm"], []).append(c)
  for arm, group in arms.items():
    runs = sum(len(c["seeds"]) for c in group)
    total = sum(sum(c["stats"]["train_time_s"]["values"]) for c in group)
    lines.append(f"| {arm} | {len(group)} | {runs} | {total:.0f} | "
                 f"{best(group, metric)['label']} |")
  return lines + [""]


def _invocation(results: dict) -> str:
  trained = results.get("runs_trained", 0)
  if not trained:
    return "this report was regenerated from finished runs."
  return (f"this invocation trained {trained} runs in "
          f"{results.get('sweep_wall_time_s', float('nan')):.0f} s (finished runs are "
          "not redone).")


def write(workdir: str, config, runs, results: dict, command: str) -> None:
  """Writes ``results.md`` and ``summary.json`` into ``workdir``."""
  sweep = config.sweep
  metric = sweep.metric
  configs = results["configs"]
  reference = None
  if sweep.get("reference", ""):
    ref_arm = [c for c in configs if c["arm"] == sweep.reference]
    if not ref_arm:
      raise ValueError(f"sweep.reference {sweep.reference!r} is not an arm label")
    reference = best(ref_arm, metric)
  first = configs[0]
  lines = [
      f"# Suite `{sweep.name}`", "",
      "```", command or "(run from Python)", "```", "",
      f"- {len(runs)} runs: {len(configs)} configs × {len(sweep.seeds)} seeds "
      f"{tuple(sweep.seeds)}; mean ± std (ddof=1) over seeds.",
      f"- Data: `{config.dataset}` "
      f"(fingerprint {first['data_fingerprint']}), model `{config.model.name}`, "
      f"batch {config.batch_size}, {config.num_steps} steps (per-arm overrides below).",
      f"- Machine: {first['device_kind']} × {config.num_devices or jax.device_count()}, "
      f"JAX {jax.__version__}, Python {platform.python_version()}, "
      f"{datetime.date.today().isoformat()}.",
      f"- Cost: {sum(sum(c['stats']['train_time_s']['values']) for c in configs):.0f} s of "
      "training summed over runs (each run's wall time includes its first-step "
      "compilation; seeds after the first reuse it); " + _invocation(results),
      "- Top Hessian eigenvalue: power iteration with HVPs on a fixed training batch "
      f"of {config.hessian.batch_size}, BatchNorm in eval mode.",
      "- Best = by mean " + metric.replace("_", " ") + ", selected on the test split.", "",
  ]
  if sweep.get("description", ""):
    lines += [sweep.description, ""]
  lines += ["## All configs", ""] + _table(configs, metric, reference) + [""]
  lines += ["## Best config of each arm", ""]
  lines += _table(best_per_arm(configs, metric), metric, reference) + [""]
  untuned = tuple(sweep.get("untuned", ()))
  if untuned:
    lines += _untuned_section(configs, metric, untuned)
  overrides = [f"- {arm['label']}: " + ", ".join(f"{k}={v}" for k, v in arm["overrides"].items())
               for arm in sweep.arms if arm.get("overrides")]
  if overrides:
    lines += ["Per-arm overrides:", ""] + overrides + [""]
  lines += ["Plots: `curves.png` (train loss, test metric), `step_size.png`, "
            "`final_metrics.png`. Raw records: `runs/<config>/seed<k>/metrics.jsonl` (one "
            "line per logged step; train records average `log_every` steps; test records "
            "every `eval_every` steps), with that run's `config.json` and `summary.json`.",
            ""]
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(lines))
  slim = [{k: v for k, v in c.items() if k != "curves"} for c in configs]
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"command": command, "metric": metric, "configs": slim,
               "sweep_wall_time_s": results.get("sweep_wall_time_s")}, f, indent=1)
