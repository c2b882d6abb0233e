"""Float64 NumPy transcription of the SPS-type steps and the MomSPS heavy ball.

Written from the papers' equations: SPS_max and the smooth cap (Loizou et al., AISTATS 2021,
arXiv:2002.10542), DecSPS (Orvieto et al., NeurIPS 2022, arXiv:2205.04583), AdaSPS (Jiang &
Stich, NeurIPS 2023, arXiv:2308.06058) and their momentum versions (Oikonomou & Loizou,
ICLR 2025, arXiv:2406.04142). It runs the iterate form
``x_{t+1} = x_t − γ_t g_t + β (x_t − x_{t−1})`` (not the library's ``trace`` form) and keeps
the Dec/Ada recursions on ``η``, so that it shares no shortcut with the library. Complex
leaves count ``‖g‖² = Σ|g|²`` and move by ``−γ_t g_t`` (complex128 throughout).
"""

import math

import numpy as np


def _wide(leaf):
  """``leaf`` as float64, or complex128 for a complex leaf."""
  leaf = np.asarray(leaf)
  return leaf.astype(np.complex128 if np.iscomplexobj(leaf) else np.float64)


def global_sq_norm(leaves):
  return float(sum(np.sum(np.abs(_wide(leaf)) ** 2) for leaf in leaves))


class PolyakRule:
  """Yields ``γ_t`` (the step actually taken) from ``(f_t − f*, ‖g_t‖²)``, one call per step."""

  def __init__(self, kind, *, c, momentum=0.0, max_learning_rate=None,
               batches_per_epoch=None, tau=2.0, init_step=1.0):
    self.kind, self.c, self.beta = kind, c, momentum
    self.gamma_b, self.n, self.tau = max_learning_rate, batches_per_epoch, tau
    self.t = 0
    self.prev_gamma = init_step  # smooth: the previous ACTUAL step
    self.prev_eta = max_learning_rate if kind == 'dec' else math.inf  # Dec/Ada: η_{t−1}
    self.gap_sum = 0.0

  def __call__(self, gap, sq_norm, c=None):
    c = self.c if c is None else c
    beta = self.beta
    if self.kind == 'max':
      gamma = (1 - beta) * min(gap / (c * sq_norm), self.gamma_b)
    elif self.kind == 'smooth':
      gamma = min((1 - beta) * gap / (c * sq_norm), self.tau ** (1 / self.n) * self.prev_gamma)
    elif self.kind == 'dec':
      c_t = c * math.sqrt(self.t + 1)
      c_prev = c * math.sqrt(self.t) if self.t > 0 else c  # c_{−1} = c_0
      eta = min(gap / sq_norm, c_prev * self.prev_eta) / c_t
      self.prev_eta = eta
      gamma = (1 - beta) * eta
    elif self.kind == 'ada':
      self.gap_sum += gap
      eta = min(gap / (c * sq_norm * math.sqrt(self.gap_sum)), self.prev_eta)
      self.prev_eta = eta
      gamma = (1 - beta) * eta
    else:
      raise ValueError(self.kind)
    self.prev_gamma = gamma
    self.t += 1
    return gamma


def heavy_ball_updates(rule, grads_per_step, losses, *, f_min=0.0, cs=None):
  """Runs the heavy ball on given gradients and losses; returns per-step updates and steps.

  Args:
    rule: a fresh :class:`PolyakRule`.
    grads_per_step: a list (steps) of lists (leaves) of real or complex arrays.
    losses: the mini-batch loss of each step.
    f_min: ``f*``.
    cs: optional per-step ``c`` (a scheduled constant).

  Returns:
    ``(updates, gammas)``: ``updates[t]`` is the list of ``x_{t+1} − x_t`` per leaf.
  """
  x = [np.zeros_like(_wide(g)) for g in grads_per_step[0]]
  x_prev = [leaf.copy() for leaf in x]
  updates, gammas = [], []
  for t, (grads, loss) in enumerate(zip(grads_per_step, losses)):
    grads = [_wide(g) for g in grads]
    gamma = rule(float(loss) - f_min, global_sq_norm(grads), None if cs is None else cs[t])
    x_next = [xi - gamma * gi + rule.beta * (xi - xp) for xi, gi, xp in zip(x, grads, x_prev)]
    updates.append([xn - xi for xn, xi in zip(x_next, x)])
    gammas.append(gamma)
    x_prev, x = x, x_next
  return updates, gammas
