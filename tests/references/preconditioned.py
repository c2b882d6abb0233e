"""Float64 NumPy transcription of the preconditioned Polyak steps PSPS and SANIA.

Written from the papers' equations: PSPS (Abdukhakimov, Xiang, Kamzolov, Takáč, arXiv:2310.02093)
with its Adam-type, AdaGrad-type and Hutchinson preconditioners, SANIA (Abdukhakimov, Xiang,
Kamzolov, Gower, Takáč, arXiv:2312.17369) with AdaGrad-SQR and Adam-SQR, and the MomSPS heavy
ball (Oikonomou & Loizou, ICLR 2025, arXiv:2406.04142): ``x_{t+1} = x_t − γ_t d_t +
β (x_t − x_{t−1})`` with ``γ_t = (1 − β) × the step``. A step whose loss gap or ``⟨g, d⟩``
is not a positive finite number is skipped: no Polyak move (the heavy ball coasts) and the
preconditioner keeps its previous estimate. Every parameter tree is a flat list of leaves.
"""

import math

import numpy as np


class Preconditioner:
  """``D_t`` of one kind, fed one gradient per step; ``commit`` keeps the candidate estimate.

  Kinds: ``'adam'`` ``√v̂ + ε``, ``'adagrad'`` ``√Σg² + ε``, ``'adam_sqr'`` ``max(v̂, ε)``,
  ``'adagrad_sqr'`` ``max(Σg², ε)``, ``'hutchinson'`` ``max(|D|, ε)`` with ``D`` the average
  of ``z ⊙ H z`` (``n`` probes at the first step, then ``b2``-decayed), ``'identity'``.
  """

  def __init__(self, kind, *, b2=0.999, eps=1e-8, hessians=None, init_samples=None):
    self.kind, self.b2, self.eps = kind, b2, eps
    self.hessians, self.init_samples = hessians, init_samples
    self.t = 0  # applied steps
    self.estimate = None
    self.candidate = None

  def _hutchinson_sample(self, probe):
    """``z ⊙ H z`` per leaf, ``H`` a dense matrix acting on the flattened leaf."""
    return [np.asarray(z, np.float64).ravel() * (h @ np.asarray(z, np.float64).ravel())
            for z, h in zip(probe, self.hessians)]

  def direction(self, grads, probes=None):
    """``d_t = D_t⁻¹ g_t`` with the estimate updated by this step's gradient (or probes)."""
    t = self.t + 1
    if self.kind == 'identity':
      return list(grads)
    if self.kind == 'hutchinson':
      probes = list(probes)
      if self.t == 0:  # D_0: the mean of the first n probes
        samples = [self._hutchinson_sample(p) for p in probes[:self.init_samples]]
        previous = [np.mean([s[i] for s in samples], axis=0) for i in range(len(grads))]
        probes = probes[self.init_samples:]
      else:
        previous = self.estimate
      sample = self._hutchinson_sample(probes[0])
      self.candidate = [self.b2 * p + (1 - self.b2) * s for p, s in zip(previous, sample)]
      return [g / np.maximum(np.abs(e), self.eps).reshape(g.shape)
              for g, e in zip(grads, self.candidate)]
    previous = self.estimate or [np.zeros_like(g) for g in grads]
    if self.kind.startswith('adam'):
      self.candidate = [self.b2 * v + (1 - self.b2) * g**2 for v, g in zip(previous, grads)]
      corrected = [v / (1 - self.b2**t) for v in self.candidate]
    else:
      self.candidate = [v + g**2 for v, g in zip(previous, grads)]
      corrected = self.candidate
    if self.kind.endswith('sqr'):
      return [g / np.maximum(v, self.eps) for g, v in zip(grads, corrected)]
    return [g / (np.sqrt(v) + self.eps) for g, v in zip(grads, corrected)]

  def commit(self):
    self.estimate, self.t = self.candidate, self.t + 1


def psps_step(gap, inner, *, c, max_learning_rate):
  """PSPS: ``min{(f − f*) / (c ⟨g, d⟩), γ_b}``."""
  return min(gap / (c * inner), max_learning_rate)


def sania_step(gap, inner):
  """SANIA: the smallest ``λ`` with ``f − f* − λ⟨g, d⟩ + ½ λ² ⟨g, d⟩ = 0``, else 1."""
  ratio = gap / inner
  return 1 - math.sqrt(1 - 2 * ratio) if ratio <= 0.5 else 1.0


def heavy_ball(preconditioner, step, grads_per_step, losses, *, momentum=0.0, f_min=0.0,
               probes_per_step=None):
  """Runs the preconditioned Polyak heavy ball on given gradients and losses.

  Args:
    preconditioner: a fresh :class:`Preconditioner`.
    step: ``(gap, ⟨g, d⟩) -> step``, e.g. ``sania_step``.
    grads_per_step: a list (steps) of lists (leaves) of arrays.
    losses: the mini-batch loss of each step.
    momentum: ``β``.
    f_min: ``f*``.
    probes_per_step: for Hutchinson, the Rademacher probes drawn at each step, in order.

  Returns:
    ``(updates, steps)``: ``updates[t]`` lists ``x_{t+1} − x_t`` per leaf; ``steps[t]`` is
    ``(1 − β) × step``, or None for a skipped step.
  """
  x = [np.zeros(np.shape(g)) for g in grads_per_step[0]]
  x_prev = [leaf.copy() for leaf in x]
  updates, steps = [], []
  for t, (grads, loss) in enumerate(zip(grads_per_step, losses)):
    grads = [np.asarray(g, np.float64) for g in grads]
    probes = None if probes_per_step is None else probes_per_step[t]
    d = preconditioner.direction(grads, probes)
    inner = float(sum(np.sum(g * di) for g, di in zip(grads, d)))
    gap = float(loss) - f_min
    gamma = None
    if math.isfinite(gap) and gap > 0 and math.isfinite(inner) and inner > 0:
      gamma = (1 - momentum) * step(gap, inner)
      preconditioner.commit()
    move = [np.zeros_like(xi) if gamma is None else gamma * di for xi, di in zip(x, d)]
    x_next = [xi - mi + momentum * (xi - xp) for xi, mi, xp in zip(x, move, x_prev)]
    updates.append([xn - xi for xn, xi in zip(x_next, x)])
    steps.append(gamma)
    x_prev, x = x, x_next
  return updates, steps
