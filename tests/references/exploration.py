"""Float64 NumPy transcription of E, ALTO and LAMB, with the authors' argument names.

Zhao, Li, Zhou, Tan, Jia, *Exploring Landscapes for Better Minima along Valleys*,
NeurIPS 2025 (arXiv:2510.27153); You et al., *Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes*, ICLR 2020 (arXiv:1904.00962, LAMB).

E is written as the authors' reference code (github.com/zhaotong94/E, ``E.py``) writes
it, with the previous gradient and the average of gradient differences as two buffers;
the library keeps one buffer, so agreement over many steps checks the one-buffer
identity. Arguments keep the reference code's names (``E(alpha, beta)``,
``ALTO(lr, betas=(beta1, beta2, beta3), alpha, ...)``), so that tests comparing the
library against this file also check the library's renaming (``explore_b1`` = ``beta1``,
ALTO's ``b1, b2`` = ``beta2, beta3``).
Trees are flat dicts ``name -> np.ndarray``; every optimizer is a small class whose
``step(params, grads)`` returns the new params. Nothing here imports optaxplus.
"""

import numpy as np

Tree = dict[str, np.ndarray]


def _zeros_like(tree: Tree) -> Tree:
  return {k: np.zeros_like(v, dtype=np.float64) for k, v in tree.items()}


def _f64(tree: Tree) -> Tree:
  return {k: np.asarray(v, dtype=np.float64) for k, v in tree.items()}


def global_norm(tree: Tree) -> float:
  return float(np.sqrt(sum(np.sum(v * v) for v in tree.values())))


class Explore:
  """E: ``a_k = beta a_{k-1} + (1-beta)(g_k - g_{k-1})``, ``ĝ_k = g_k + alpha a_k``."""

  def __init__(self, alpha: float, beta: float):
    self.alpha, self.beta = alpha, beta
    self.prev_grad: Tree | None = None  # g_0 = 0
    self.grad_diff_avg: Tree | None = None  # a_0 = 0

  def __call__(self, grads: Tree) -> Tree:
    grads = _f64(grads)
    if self.prev_grad is None:
      self.prev_grad, self.grad_diff_avg = _zeros_like(grads), _zeros_like(grads)
    explored = {}
    for k, g in grads.items():
      a = self.beta * self.grad_diff_avg[k] + (1 - self.beta) * (g - self.prev_grad[k])
      self.grad_diff_avg[k] = a
      explored[k] = g + self.alpha * a
    self.prev_grad = {k: g.copy() for k, g in grads.items()}
    return explored


class SGD:
  """``t = g + momentum t``, ``w -= lr (g + momentum t)`` if nesterov else ``lr t``."""

  def __init__(self, lr: float, momentum: float | None = None, nesterov: bool = False):
    self.lr, self.momentum, self.nesterov = lr, momentum or 0.0, nesterov
    self.trace: Tree | None = None

  def step(self, params: Tree, grads: Tree) -> Tree:
    if self.trace is None:
      self.trace = _zeros_like(grads)
    new = {}
    for k, g in grads.items():
      self.trace[k] = g + self.momentum * self.trace[k]
      direction = g + self.momentum * self.trace[k] if self.nesterov else self.trace[k]
      new[k] = params[k] - self.lr * direction
    return new


class Adam:
  """Adam(W): bias-corrected moments, ``w -= lr (m̂/(sqrt(v̂)+eps) + wd w [decayed])``."""

  def __init__(self, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decayed: dict[str, bool] | None = None):
    self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
    self.weight_decay, self.decayed = weight_decay, decayed
    self.mu: Tree | None = None
    self.nu: Tree | None = None
    self.count = 0

  def step(self, params: Tree, grads: Tree) -> Tree:
    if self.mu is None:
      self.mu, self.nu = _zeros_like(grads), _zeros_like(grads)
    self.count += 1
    new = {}
    for k, g in grads.items():
      self.mu[k] = self.b1 * self.mu[k] + (1 - self.b1) * g
      self.nu[k] = self.b2 * self.nu[k] + (1 - self.b2) * g * g
      mu_hat = self.mu[k] / (1 - self.b1 ** self.count)
      nu_hat = self.nu[k] / (1 - self.b2 ** self.count)
      r = mu_hat / (np.sqrt(nu_hat) + self.eps)
      if self.decayed is None or self.decayed[k]:
        r = r + self.weight_decay * params[k]
      new[k] = params[k] - self.lr * r
    return new


class WithExplore:
  """Any optimizer above, fed E's output instead of the raw gradient."""

  def __init__(self, explore: Explore, base):
    self.explore, self.base = explore, base

  def step(self, params: Tree, grads: Tree) -> Tree:
    return self.base.step(params, self.explore(grads))


class ALTO:
  """ALTO in the reference order; ``alpha = 0`` is the reference's LAMB.

  Per step: clip the whole gradient to global norm ``clip_norm``; E (``alpha``,
  ``beta1``; two buffers, on the clipped gradient); Adam moments of ``ĝ`` with
  ``beta2, beta3``, bias corrected,
  ``r = m̂/(sqrt(v̂)+eps)``; for tensors with ``decayed[k]``: ``r += wd w`` and
  ``w -= lr ‖w‖/‖r‖ r`` (ratio 1 if a norm is 0); others: ``w -= lr r``.
  ``decayed=None`` decays every tensor (optax.lamb's convention). ``alpha`` may be
  changed between steps (a schedule).
  """

  def __init__(self, lr: float, betas: tuple[float, float, float] = (0.99, 0.9, 0.99),
               alpha: float = -5.0, eps: float = 1e-6, weight_decay: float = 1e-4,
               decayed: dict[str, bool] | None = None, clip_norm: float = 1.0):
    beta1, self.beta2, self.beta3 = betas
    self.lr, self.eps = lr, eps
    self.weight_decay, self.decayed, self.clip_norm = weight_decay, decayed, clip_norm
    self.explore = Explore(alpha, beta1)
    self.mu: Tree | None = None
    self.nu: Tree | None = None
    self.count = 0

  def step(self, params: Tree, grads: Tree) -> Tree:
    grads = _f64(grads)
    norm = global_norm(grads)
    if norm > self.clip_norm:
      grads = {k: g * (self.clip_norm / norm) for k, g in grads.items()}
    explored = self.explore(grads)
    if self.mu is None:
      self.mu, self.nu = _zeros_like(grads), _zeros_like(grads)
    self.count += 1
    new = {}
    for k, g in explored.items():
      self.mu[k] = self.beta2 * self.mu[k] + (1 - self.beta2) * g
      self.nu[k] = self.beta3 * self.nu[k] + (1 - self.beta3) * g * g
      mu_hat = self.mu[k] / (1 - self.beta2 ** self.count)
      nu_hat = self.nu[k] / (1 - self.beta3 ** self.count)
      r = mu_hat / (np.sqrt(nu_hat) + self.eps)
      trust = 1.0
      if self.decayed is None or self.decayed[k]:
        r = r + self.weight_decay * params[k]
        w_norm, r_norm = np.linalg.norm(params[k]), np.linalg.norm(r)
        if w_norm > 0 and r_norm > 0:
          trust = w_norm / r_norm
      new[k] = params[k] - self.lr * trust * r
    return new
