"""PNG plots of a sweep: curves (best config of each arm), step sizes, final metrics."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from experiments import report  # pylint: disable=wrong-import-position

DPI = 72


def _mean_curve(curves: list[list[dict]], split: str, key: str):
  """Steps and mean/min/max over seeds of ``key`` in the ``split`` records."""
  series = []
  for records in curves:
    pts = {r["step"]: r[key] for r in records if r["split"] == split and key in r}
    series.append(pts)
  steps = sorted(set.intersection(*[set(s) for s in series])) if series else []
  if not steps:
    return None
  values = np.array([[s[t] for t in steps] for s in series], np.float64)
  with np.errstate(invalid="ignore"):
    return np.array(steps), values.mean(0), values.min(0), values.max(0)


def _plot_curves(ax, configs, split, key, ylabel, log=False, clip_above_start=False):
  """Mean over seeds with a min-max band; ``clip_above_start``: the y axis stops at 3x
  the median starting value, so one run that blows up does not flatten the others."""
  starts = []
  for c in configs:
    curve = _mean_curve(c["curves"], split, key)
    if curve is None:
      continue
    steps, mean, lo, hi = curve
    (line,) = ax.plot(steps, mean, label=c["label"], lw=1.2)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    if np.isfinite(mean[0]):
      starts.append(mean[0])
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  if log:
    ax.set_yscale("log")
  if clip_above_start and starts:
    ax.set_ylim(top=3 * float(np.median(starts)))
  ax.grid(alpha=0.3)


def write_all(workdir: str, config, results: dict) -> None:
  """Writes ``curves.png``, ``step_size.png`` and ``final_metrics.png`` into ``workdir``."""
  metric = config.sweep.metric
  configs = results["configs"]
  shown = report.best_per_arm(configs, metric)
  test_key = "perplexity" if metric == "test_perplexity" else "accuracy"

  fig, axes = plt.subplots(1, 2, figsize=(13, 4))
  _plot_curves(axes[0], shown, "train", "loss", "train loss (mean over seeds)", log=True,
               clip_above_start=True)
  _plot_curves(axes[1], shown, "test", test_key, f"test {test_key}",
               log=test_key == "perplexity", clip_above_start=test_key == "perplexity")
  axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  fig.suptitle(f"{config.sweep.name}: best config of each arm (band: min-max over seeds; "
               "curves leaving the top blew up)", fontsize=10)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "curves.png"), dpi=DPI)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(9, 4))
  _plot_curves(ax, shown, "train", "step_size", "step size / learning rate", log=True)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  ax.set_title("step size taken (Polyak methods) or learning rate", fontsize=10)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "step_size.png"), dpi=DPI)
  plt.close(fig)

  labels = [c["label"] for c in configs]
  fig, axes = plt.subplots(1, 2, figsize=(11, max(3.0, 0.28 * len(labels) + 1.2)))
  scale = 100.0 if metric == "test_accuracy" else 1.0
  for ax, key, title in ((axes[0], metric, metric.replace("_", " ")),
                         (axes[1], "hessian_top_eigenvalue", "top Hessian eigenvalue")):
    mean = np.array([c["stats"][key]["mean"] for c in configs]) * (
        scale if key == metric else 1.0)
    std = np.array([c["stats"][key]["std"] for c in configs]) * (
        scale if key == metric else 1.0)
    finite = np.isfinite(mean)
    # A run that blew up (e.g. perplexity 1e300) would flatten every other bar.
    typical = np.median(np.abs(mean[finite])) if finite.any() else 0.0
    shown = finite & (np.abs(mean) <= 50 * typical + 1e-12)
    y = np.arange(len(labels))
    ax.barh(y[shown], mean[shown], xerr=np.nan_to_num(std[shown], posinf=0.0),
            color="tab:blue", alpha=0.7)
    for i in y[~finite]:
      ax.text(0, i, " diverged", va="center", fontsize=7, color="tab:red")
    for i in y[finite & ~shown]:
      ax.text(0, i, f" blew up ({mean[i]:.1e})", va="center", fontsize=7, color="tab:red")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title + (" (%)" if key == "test_accuracy" else ""), fontsize=10)
    if shown.any() and key == "test_accuracy":
      lo = float(np.min(mean[shown] - std[shown]))
      ax.set_xlim(max(0.0, math.floor(lo - 2)), 100)
    ax.grid(axis="x", alpha=0.3)
  axes[1].tick_params(labelleft=False)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "final_metrics.png"), dpi=DPI)
  plt.close(fig)
