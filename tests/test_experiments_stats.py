"""experiments/stats.py against hand-computed paired t intervals, p-values and Holm steps."""

import math

import numpy as np
import pytest

from experiments import stats

# Student-t quantiles from printed tables; t_1 is the Cauchy quantile tan(π (q - 1/2)).
T3_975 = 3.182446305284263
T3_95 = 2.353363434801823
T1_975 = math.tan(math.pi * 0.475)


def t3_two_sided_p(t):
  """Two-sided p of Student's t with 3 degrees of freedom, from its closed-form CDF."""
  x = abs(t) / math.sqrt(3.0)
  cdf = 0.5 + (x / (1.0 + x * x) + math.atan(x)) / math.pi
  return 2.0 * (1.0 - cdf)


P_1234 = t3_two_sided_p(2.5 / math.sqrt(5.0 / 3.0 / 4.0))  # differences [1, 2, 3, 4]


@pytest.mark.parametrize('confidence, quantile', [(0.95, T3_975), (0.90, T3_95)])
def test_paired_t_interval_and_p_value_by_hand(confidence, quantile):
  # d = [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) (ddof=1), standard error s / 2.
  d = stats.paired_difference([2., 4., 6., 8.], [1., 2., 3., 4.], confidence=confidence)
  half = quantile * math.sqrt(5.0 / 3.0) / 2.0
  assert d.mean == pytest.approx(2.5, abs=1e-12)
  assert (d.low, d.high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-9)
  assert d.p_value == pytest.approx(P_1234, abs=1e-9)
  assert (d.n, d.method) == (4, 't')
  if confidence == 0.95:
    assert (d.low, d.high) == pytest.approx((0.4457, 4.5543), abs=1e-4)
    assert d.p_value == pytest.approx(0.030466, abs=1e-6)


def test_paired_t_two_seeds_against_the_cauchy_distribution():
  # d = [1, 3]: mean 2, s = sqrt(2), standard error 1, t = 2 with 1 degree of freedom.
  d = stats.paired_difference([1., 3.], [0., 0.])
  assert (d.low, d.high) == pytest.approx((2.0 - T1_975, 2.0 + T1_975), abs=1e-9)
  assert d.p_value == pytest.approx(1.0 - 2.0 * math.atan(2.0) / math.pi, abs=1e-9)


def test_equal_differences_give_a_point_interval():
  for method in ('t', 'bootstrap'):
    d = stats.paired_difference([1.5] * 4, [1.0] * 4, method=method)
    assert (d.mean, d.low, d.high, d.p_value) == pytest.approx((0.5, 0.5, 0.5, 0.0))
    d = stats.paired_difference([1.0] * 4, [1.0] * 4, method=method)
    assert (d.mean, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize('method', ['t', 'bootstrap'])
def test_fewer_than_two_pairs_give_nan_not_an_error(method):
  one = stats.paired_difference([3.0], [1.0], method=method)
  assert (one.mean, one.n) == (2.0, 1)
  assert all(math.isnan(x) for x in (one.low, one.high, one.p_value))
  none = stats.paired_difference([], [], method=method)
  assert none.n == 0 and all(math.isnan(x) for x in none[:4])


def test_bootstrap_by_exact_enumeration():
  # d = [-1, 2, 2, 2]: a resample holding k copies of -1 has mean (8 - 3k) / 4, k ~
  # Binomial(4, 1/4). P(mean <= 0) = P(k >= 3) = 13/256, so p = 26/256; the 2.5% quantile
  # is -0.25 (CDF 1/256 at -1, 13/256 at -0.25) and the 97.5% quantile is 2 (CDF 175/256
  # below it).
  d = stats.paired_difference([-1., 2., 2., 2.], [0.] * 4, method='bootstrap',
                              num_resamples=100_000, seed=3)
  assert (d.low, d.high) == (-0.25, 2.0)
  assert d.p_value == pytest.approx(26 / 256, abs=0.006)
  assert (d.mean, d.n, d.method) == (1.25, 4, 'bootstrap')


def test_bootstrap_is_seeded_and_close_to_t_for_many_seeds():
  rng = np.random.default_rng(0)
  arm, reference = rng.normal(0.3, 1.0, 200), np.zeros(200)
  boot = stats.paired_difference(arm, reference, method='bootstrap', seed=7)
  assert boot == stats.paired_difference(arm, reference, method='bootstrap', seed=7)
  assert boot.low != stats.paired_difference(arm, reference, method='bootstrap',
                                             seed=8).low
  half = 1.971956544 * arm.std(ddof=1) / math.sqrt(200)  # t_{199, 0.975} from tables
  assert abs(boot.low - (arm.mean() - half)) < 0.1 * half
  assert abs(boot.high - (arm.mean() + half)) < 0.1 * half
  assert boot.high - boot.low == pytest.approx(2 * half, rel=0.1)


@pytest.mark.parametrize('method, num_resamples', [('t', 1), ('bootstrap', 37),
                                                   ('bootstrap', 1000)])
def test_small_p_value_means_the_interval_excludes_zero(method, num_resamples):
  rng = np.random.default_rng(1)
  for trial in range(200):
    n = int(rng.integers(2, 12))
    confidence = float(rng.choice([0.8, 0.9, 0.95, 0.99]))
    d = stats.paired_difference(rng.normal(rng.normal(), 1.0, n), np.zeros(n),
                                confidence=confidence, method=method,
                                num_resamples=num_resamples, seed=trial)
    excludes_zero = d.low > 0.0 or d.high < 0.0
    if d.p_value < 1.0 - confidence:
      assert excludes_zero, d
    elif method == 't':
      assert not excludes_zero, d


def test_holm_by_hand():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, max(0.06, 0.04).
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.5, 0.6]) == [1.0, 1.0]
  assert stats.holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])
  assert stats.holm([]) == []
  # An untested hypothesis (NaN) stays NaN and is not counted: m = 2.
  adjusted = stats.holm([0.01, math.nan, 0.04])
  assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
  assert math.isnan(adjusted[1])
  with pytest.raises(ValueError, match='p_values'):
    stats.holm([0.5, 1.5])


def test_compare_arms_pairs_by_seed():
  reference = {3: 10.0, 0: 1.0, 1: 5.0, 2: 2.0, 9: 7.0}
  arm = {1: 7.0, 0: 2.0, 2: 5.0, 3: 14.0, 8: -100.0}  # seeds 0-3 differ by 1, 2, 3, 4
  c = stats.compare_arms({'ref': reference, 'arm': arm}, 'ref')['arm']
  half = T3_975 * math.sqrt(5.0 / 3.0) / 2.0
  assert (c.mean, c.n) == (2.5, 4)
  assert (c.low, c.high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-9)
  assert c.p_value == c.p_holm == pytest.approx(P_1234, abs=1e-9)
  assert (c.verdict, c.num_diverged) == ('better', 0)


def test_holm_can_overrule_an_interval_that_excludes_zero():
  reference = {s: 10.0 * (s + 1) for s in range(4)}

  def shift(offsets):
    return {s: reference[s] + o for s, o in enumerate(offsets)}

  values = {'ref': reference, 'up': shift([1, 2, 3, 4]), 'down': shift([-1, -2, -3, -4]),
            'much_up': shift([10, 10.1, 9.9, 10]), 'much_down': shift([-10, -10.1, -9.9, -10])}
  result = stats.compare_arms(values, 'ref')
  assert list(result) == ['up', 'down', 'much_up', 'much_down']
  for arm in ('up', 'down'):  # p = 0.0305 each, Holm: 2 p = 0.0609 > 0.05
    c = result[arm]
    assert c.low > 0.0 or c.high < 0.0
    assert c.p_value == pytest.approx(P_1234, abs=1e-9)
    assert c.p_holm == pytest.approx(2 * P_1234, abs=1e-9)
    assert c.verdict == 'no detectable difference'
  assert result['much_up'].verdict == 'better' and result['much_down'].verdict == 'worse'
  lower = stats.compare_arms(values, 'ref', higher_is_better=False)
  assert lower['much_up'].verdict == 'worse' and lower['much_down'].verdict == 'better'
  assert stats.compare_arms({'ref': reference, 'up': values['up']},
                            'ref')['up'].verdict == 'better'  # one test: p = 0.0305


def test_non_finite_values():
  reference = {s: 1.0 for s in range(5)}
  good = {s: 1.0 + d for s, d in enumerate([1., 2., 3., 4., 2.5])}
  diverged = {**good, 4: math.nan}
  blown_up = {**good, 3: math.inf, 4: -math.inf}
  result = stats.compare_arms({'ref': reference, 'good': good, 'nan': diverged,
                               'inf': blown_up}, 'ref')
  assert (result['nan'].verdict, result['nan'].num_diverged, result['nan'].n) == (
      'diverged', 1, 4)
  assert (result['inf'].verdict, result['inf'].num_diverged, result['inf'].n) == (
      'diverged', 2, 3)
  assert (result['nan'].mean, result['good'].num_diverged) == (2.5, 0)
  # Diverged arms stay in Holm's family: three tests, and 'good' (d = [1, 2, 3, 4, 2.5],
  # t = 2.5 / 0.5 = 5 with 4 degrees of freedom) has the smallest p.
  assert result['good'].p_holm == pytest.approx(3 * result['good'].p_value)
  assert result['good'].verdict == 'better'
  # The reference's non-finite seed drops that pair only; the arm did not diverge.
  broken_reference = {**reference, 4: math.nan}
  c = stats.compare_arms({'ref': broken_reference, 'good': good}, 'ref')['good']
  assert (c.n, c.num_diverged, c.mean, c.verdict) == (4, 0, 2.5, 'better')
  with pytest.raises(ValueError, match='finite'):
    stats.paired_difference([1.0, math.nan], [0.0, 0.0])


def test_too_few_seeds_are_left_out_of_holm():
  reference = {s: 0.0 for s in range(4)}
  values = {'ref': reference, 'a': {s: float(s + 1) for s in range(4)}, 'b': {0: 5.0}}
  result = stats.compare_arms(values, 'ref')
  assert (result['b'].verdict, result['b'].n, result['b'].mean) == ('too few seeds', 1, 5.0)
  assert math.isnan(result['b'].p_holm)
  assert result['a'].p_holm == pytest.approx(P_1234) and result['a'].verdict == 'better'
  none = stats.compare_arms({'ref': reference, 'c': {7: 1.0}}, 'ref')['c']
  assert none.n == 0 and none.verdict == 'too few seeds' and math.isnan(none.mean)


def test_format_interval():
  d = stats.PairedDifference(0.42, -0.1, 0.94, 0.1, 5, 't')
  assert stats.format_interval(d) == '+0.42 [−0.10, +0.94]'
  d = stats.PairedDifference(-0.42, -0.9, 0.06, 0.1, 5, 't')
  assert stats.format_interval(d, digits=3) == '−0.420 [−0.900, +0.060]'
  d = stats.PairedDifference(1.0, math.nan, math.nan, math.nan, 1, 't')
  assert stats.format_interval(d) == '+1.00 [n/a]'
  assert stats.format_interval(stats.paired_difference([], [])) == 'n/a [n/a]'


def test_bad_arguments():
  with pytest.raises(ValueError, match='confidence'):
    stats.paired_difference([1., 2.], [0., 0.], confidence=1.0)
  with pytest.raises(ValueError, match='method'):
    stats.paired_difference([1., 2.], [0., 0.], method='z')
  with pytest.raises(ValueError, match='num_resamples'):
    stats.paired_difference([1., 2.], [0., 0.], method='bootstrap', num_resamples=0)
  with pytest.raises(ValueError, match='equal length'):
    stats.paired_difference([1., 2.], [0.])
  with pytest.raises(ValueError, match="reference 'sgd'"):
    stats.compare_arms({'adam': {0: 1.0}}, 'sgd')
