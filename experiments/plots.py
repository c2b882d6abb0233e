"""PNG plots of a suite, from its summary alone: curves, step sizes, final metrics."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from experiments import report  # pylint: disable=wrong-import-position

DPI = 72


def _mean_curve(config: dict, split: str, key: str):
  """Steps and mean/min/max over seeds of ``key`` in the ``split`` curves (None: none)."""
  series = []
  for run in config["runs"]:
    curve = run["curves"].get(split, {})
    if key in curve:
      series.append({s: (math.nan if v is None else v)
                     for s, v in zip(curve["step"], curve[key])})
  steps = sorted(set.intersection(*[set(s) for s in series])) if series else []
  if not steps:
    return None
  v = np.array([[s[t] for t in steps] for s in series], np.float64)
  with np.errstate(invalid="ignore"):
    return np.array(steps), v.mean(0), v.min(0), v.max(0)


def _plot_curves(ax, configs, split, key, ylabel, log=False, clip_above_start=False):
  """Mean over seeds with a min-max band; ``clip_above_start``: the y axis stops at 3x
  the median starting value, so one run that blows up does not flatten the others."""
  starts = []
  for i, c in enumerate(configs):  # one colour per config in every panel
    curve = _mean_curve(c, split, key)
    if curve is None:
      ax.plot([], [], color=f"C{i}", label=f"{c['label']} (no {split} curve)")
      continue
    steps, mean, lo, hi = curve
    ax.plot(steps, mean, color=f"C{i}", label=c["label"], lw=1.2)
    ax.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.15, lw=0)
    if np.isfinite(mean[0]):
      starts.append(mean[0])
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  if log:
    ax.set_yscale("log")
  if clip_above_start and starts:
    ax.set_ylim(top=3 * float(np.median(starts)))
  ax.grid(alpha=0.3)


def _curves(summary: dict, shown: list[dict], path: str) -> None:
  metric = summary["sweep"]["metric"]
  fig, axes = plt.subplots(1, 2, figsize=(13, 4))
  _plot_curves(axes[0], shown, "train", "loss", "train loss (mean over seeds)", log=True,
               clip_above_start=True)
  _plot_curves(axes[1], shown, "validation", metric, f"validation {metric}",
               log=metric != "accuracy", clip_above_start=metric != "accuracy")
  axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  fig.suptitle(f"{summary['sweep']['name']}: each arm's config chosen on validation "
               "(band: min-max over seeds; curves leaving the top blew up)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def _step_sizes(shown: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(9, 4))
  _plot_curves(ax, shown, "train", "step_size", "step size / learning rate", log=True)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  ax.set_title("step size taken (Polyak methods) or learning rate", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def _bars(ax, configs: list[dict], key: str, scale: float, title: str) -> None:
  """Mean ± std bars; diverged, probe-off and blown-up values are written, not drawn."""
  v = [report.values(c, key, scale) for c in configs]
  mean = np.array([x[np.isfinite(x)].mean() if np.isfinite(x).any() else math.nan
                   for x in v])
  std = np.array([x[np.isfinite(x)].std(ddof=1) if np.isfinite(x).sum() > 1 else 0.0
                  for x in v])
  finite = np.isfinite(mean)
  # A run that blew up (e.g. perplexity 1e300) would flatten every other bar.
  typical = np.median(np.abs(mean[finite])) if finite.any() else 0.0
  drawn = finite & (np.abs(mean) <= 50 * typical + 1e-12)
  y = np.arange(len(configs))
  ax.barh(y[drawn], mean[drawn], xerr=std[drawn], color="tab:blue", alpha=0.7)
  for i in y[~finite]:
    off = report.cell(configs[i], key, 1.0, 2) == "off"
    ax.text(0, i, " off" if off else " diverged", va="center", fontsize=7,
            color="tab:gray" if off else "tab:red")
  for i in y[finite & ~drawn]:
    ax.text(0, i, f" blew up ({mean[i]:.1e})", va="center", fontsize=7, color="tab:red")
  ax.set_yticks(y, [c["label"] for c in configs], fontsize=7)
  ax.invert_yaxis()
  ax.set_title(title, fontsize=10)
  if drawn.any() and key.endswith("accuracy"):
    ax.set_xlim(max(0.0, math.floor(float(np.min(mean[drawn] - std[drawn])) - 2)), 100)
  ax.grid(axis="x", alpha=0.3)


def _final_metrics(summary: dict, path: str) -> None:
  metric, configs = summary["sweep"]["metric"], summary["configs"]
  fig, axes = plt.subplots(1, 2, figsize=(11, max(3.0, 0.28 * len(configs) + 1.2)))
  unit = " (%)" if metric == "accuracy" else ""
  _bars(axes[0], configs, f"validation_{metric}", 100.0 if metric == "accuracy" else 1.0,
        f"validation {metric}{unit} (selects)")
  _bars(axes[1], configs, "hessian_top_eigenvalue", 1.0, "top Hessian eigenvalue")
  axes[1].tick_params(labelleft=False)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def write_all(summary: dict, folder: str, chosen: dict[str, dict]) -> None:
  """Writes ``curves.png``, ``step_size.png`` and ``final_metrics.png`` into ``folder``."""
  shown = list(chosen.values())
  _curves(summary, shown, os.path.join(folder, "curves.png"))
  _step_sizes(shown, os.path.join(folder, "step_size.png"))
  _final_metrics(summary, os.path.join(folder, "final_metrics.png"))
