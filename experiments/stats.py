"""Paired comparisons of optimizers over seeds: mean difference, 95% interval, Holm.

Every arm of a suite runs on the same seeds, and a seed fixes the initialization and the
batch order, so arms are compared seed by seed: the statistic is the mean of the per-seed
differences ``d_i = arm_i - reference_i``, free of the seed-to-seed variation both arms
share. Several arms against one reference are several tests: their p-values are
Holm-adjusted before any arm is called better.

References:
  Student, "The probable error of a mean", Biometrika 6(1), 1908.
  Efron & Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993.
  Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Stat., 1979.
"""

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from optaxplus._checks import check_range

VERDICTS = ('better', 'worse', 'no detectable difference', 'too few seeds', 'diverged')


class PairedDifference(NamedTuple):
  """Arm minus reference over paired seeds."""
  mean: float  # mean of the per-seed differences (arm - reference)
  low: float  # lower end of the confidence interval
  high: float  # upper end
  p_value: float  # two-sided p-value of 'mean difference = 0' (unadjusted)
  n: int  # number of paired seeds used
  method: str  # 't' or 'bootstrap'


class Comparison(NamedTuple):
  """A :class:`PairedDifference` with its Holm-adjusted p-value and verdict."""
  mean: float
  low: float
  high: float
  p_value: float
  n: int
  method: str
  p_holm: float  # p_value Holm-adjusted across the arms of one compare_arms call
  verdict: str  # one of VERDICTS
  num_diverged: int  # paired seeds on which the arm's value is NaN or infinite


def paired_difference(arm, reference, *, confidence=0.95, method='t',
                      num_resamples=10_000, seed=0) -> PairedDifference:
  """Mean of ``arm - reference`` over paired seeds with its interval and p-value.

  ``method='t'`` (the default): with ``s`` the standard deviation (``ddof=1``) of the n
  differences ``d`` and ``q = t_{n-1}((1 + confidence) / 2)``, the interval is ``mean(d) ±
  q s / √n`` and ``p = 2 P(T_{n-1} > |mean(d)| √n / s)``, below ``1 - confidence`` exactly
  when the interval excludes 0. If ``s = 0``: the point, and ``p = 0`` (1 if mean 0).

  ``method='bootstrap'``: ``m*`` are the means of ``num_resamples`` resamples of ``d``
  (``numpy.random.default_rng(seed)``); the interval is their ``(1 ∓ confidence) / 2``
  quantiles (inverse empirical CDF), ``p = min(1, 2 min(P*(m* ≤ 0), P*(m* ≥ 0)))`` and
  ``p < 1 - confidence`` implies that it excludes 0. n values have only ``C(2n-1, n)``
  resamples (126 for n = 5): below ~8 seeds this interval is coarse and too narrow.

  Args:
    arm, reference: the two arms' metric on the same seeds, in the same order; finite
      (:func:`compare_arms` handles diverged runs), else a ``ValueError``.
    confidence: the interval's coverage, in (0, 1).
    method: ``'t'`` or ``'bootstrap'``.
    num_resamples, seed: the number of bootstrap resamples (≥ 1) and their seed.

  Returns:
    A :class:`PairedDifference`, whose ``low``, ``high`` and ``p_value`` are NaN with
    fewer than 2 pairs (and ``mean`` too with none).

  Examples:
    >>> d = paired_difference([2., 4., 6., 8.], [1., 2., 3., 4.])
    >>> print(f'{d.mean:.4f} [{d.low:.4f}, {d.high:.4f}] p={d.p_value:.4f}')
    2.5000 [0.4457, 4.5543] p=0.0305
  """
  check_range('confidence', confidence, 0.0, 1.0, low_open=True, high_open=True)
  check_range('num_resamples', num_resamples, 1, integer=True)
  if method not in ('t', 'bootstrap'):
    raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}.")
  arm, reference = np.asarray(arm, np.float64), np.asarray(reference, np.float64)
  if arm.ndim != 1 or arm.shape != reference.shape:
    raise ValueError(f'arm and reference must be 1-D and of equal length, got shapes '
                     f'{arm.shape} and {reference.shape}.')
  if not (np.all(np.isfinite(arm)) and np.all(np.isfinite(reference))):
    raise ValueError(f'arm and reference must be finite, got {arm} and {reference}.')
  d, n = arm - reference, arm.size
  mean = float(d.mean()) if n else math.nan
  if n < 2:
    return PairedDifference(mean, math.nan, math.nan, math.nan, n, method)
  alpha = 1.0 - confidence
  if method == 't':
    sd = float(d.std(ddof=1))
    if sd == 0.0:
      return PairedDifference(mean, mean, mean, float(mean == 0.0), n, method)
    se = sd / math.sqrt(n)
    half = float(scipy_stats.t.ppf(1.0 - alpha / 2, n - 1)) * se
    p = float(2.0 * scipy_stats.t.sf(abs(mean) / se, n - 1))
    return PairedDifference(mean, mean - half, mean + half, p, n, method)
  means = d[np.random.default_rng(seed).integers(0, n, (num_resamples, n))].mean(axis=1)
  low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2], method='inverted_cdf')
  p = min(1.0, 2.0 * min(np.mean(means <= 0.0), np.mean(means >= 0.0)))
  return PairedDifference(mean, float(low), float(high), float(p), n, method)


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm–Bonferroni adjusted p-values, in the order given.

  With the m p-values sorted, ``p_(1) ≤ … ≤ p_(m)``, the adjusted ``p_(k)`` is
  ``min(1, max_{j ≤ k} (m - j + 1) p_(j))``; rejecting where it is below α keeps the
  family-wise error rate ≤ α. NaN entries (untested) stay NaN and do not count in m.

  Examples:
    >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
  """
  p = np.asarray(p_values, np.float64).reshape(-1)
  tested = np.flatnonzero(~np.isnan(p))
  if np.any((p[tested] < 0.0) | (p[tested] > 1.0)):
    raise ValueError(f'p_values must lie in [0, 1] (or be NaN), got {p.tolist()}.')
  order = tested[np.argsort(p[tested], kind='stable')]
  adjusted = np.full(p.shape, math.nan)
  factor = order.size - np.arange(order.size)  # m - j + 1 for the j-th smallest
  adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factor * p[order]))
  return adjusted.tolist()


def compare_arms(values: Mapping[str, Mapping[int, float]], reference: str, *,
                 confidence=0.95, method='t', higher_is_better=True,
                 num_resamples=10_000, seed=0) -> dict[str, Comparison]:
  """Every arm against ``reference``, paired by seed, with Holm's correction.

  ``values[arm][seed]`` is a metric. Seeds present in both the arm and the reference are
  paired; pairs holding a NaN or infinite value are left out, and where the arm's value is
  the non-finite one the pair counts in ``num_diverged`` and the verdict is ``'diverged'``
  whatever the other seeds say (the reference's own divergence shows in its own row).
  Holm's correction covers every arm with ≥ 2 pairs, diverged ones included. An arm is
  ``'better'`` (``'worse'``) when ``p_holm < 1 - confidence`` and its unadjusted interval
  lies on the better (worse) side of 0: as ``p_holm ≥ p_value`` such an interval excludes
  0, but one that excludes 0 may be ``'no detectable difference'`` after the correction.
  Fewer than 2 pairs: ``'too few seeds'``.

  Args:
    values: metric per arm and seed, ``reference`` among the arms.
    reference: the arm every other arm is compared with.
    confidence, method, num_resamples, seed: as in :func:`paired_difference`.
    higher_is_better: whether a larger metric is better (accuracy) or not (loss).

  Returns:
    ``{arm: Comparison}`` for every arm but ``reference``, in the order of ``values``.

  Examples:
    >>> values = {'sgd': {0: 0.90, 1: 0.91, 2: 0.89}, 'sps': {0: 0.93, 1: 0.93, 2: 0.92}}
    >>> c = compare_arms(values, 'sgd')['sps']
    >>> print(format_interval(c), c.verdict)
    +0.03 [+0.01, +0.04] better
  """
  if reference not in values:
    raise ValueError(f'reference {reference!r} is not one of the arms {list(values)}.')
  base, differences, diverged = values[reference], {}, {}
  for arm, by_seed in values.items():
    if arm == reference:
      continue
    seeds = sorted(set(by_seed) & set(base))
    diverged[arm] = sum(not math.isfinite(by_seed[s]) for s in seeds)
    kept = [s for s in seeds if math.isfinite(by_seed[s]) and math.isfinite(base[s])]
    differences[arm] = paired_difference(
        [by_seed[s] for s in kept], [base[s] for s in kept], confidence=confidence,
        method=method, num_resamples=num_resamples, seed=seed)
  adjusted = dict(zip(differences, holm([d.p_value for d in differences.values()])))
  result = {}
  for arm, d in differences.items():
    if diverged[arm]:
      verdict = 'diverged'
    elif d.n < 2:
      verdict = 'too few seeds'
    elif adjusted[arm] < 1.0 - confidence and (d.low > 0.0 or d.high < 0.0):
      verdict = 'better' if (d.low > 0.0) == higher_is_better else 'worse'
    else:
      verdict = 'no detectable difference'
    result[arm] = Comparison(*d, adjusted[arm], verdict, diverged[arm])
  return result


def format_interval(d: PairedDifference | Comparison, digits: int = 2) -> str:
  """``'+0.42 [−0.10, +0.94]'``: signed mean and interval, with a true minus sign.

  Examples:
    >>> format_interval(PairedDifference(0.42, -0.1, 0.94, 0.1, 5, 't'))
    '+0.42 [−0.10, +0.94]'
  """
  def signed(x):
    return f'{x:+.{digits}f}'.replace('-', '−') if math.isfinite(x) else 'n/a'
  interval = f'{signed(d.low)}, {signed(d.high)}' if math.isfinite(d.low) else 'n/a'
  return f'{signed(d.mean)} [{interval}]'
