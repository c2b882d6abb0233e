"""Float64 NumPy transcription of Unified SAM, ASAM and m-sharpness.

Unified SAM: Oikonomou & Loizou, *Sharpness-Aware Minimization: General Analysis and
Improved Rates*, ICLR 2025 (arXiv:2503.02225). ASAM: Kwon, Kim, Park & Choi, ICML 2021
(arXiv:2102.11600). m-sharpness: Foret, Kleiner, Mobahi & Neyshabur, ICLR 2021
(arXiv:2010.01412).

Written from the equations with plain dicts of NumPy arrays (name -> array) and explicit
loops over steps; the base optimizers (SGD with momentum, Adam, MomSPS_max) are written
here too, in their textbook forms. The test problem is a small tanh MLP with a
hand-written backward pass, so that no gradient comes from JAX.
"""

import math

import numpy as np


def as_float64(tree):
  return {name: np.asarray(value, np.float64) for name, value in tree.items()}


def global_norm(tree):
  """sqrt(Σ x²) over every leaf, divided by max|x| first so that 1e-200 and 1e200 work."""
  largest = float(np.max([np.max(np.abs(leaf), initial=0.0) for leaf in tree.values()],
                         initial=0.0))  # NaN if any entry is NaN
  if largest == 0.0 or not math.isfinite(largest):
    return largest
  return largest * math.sqrt(sum(float(np.sum((leaf / largest) ** 2))
                                 for leaf in tree.values()))


def at(hyperparameter, t):
  """A hyperparameter's value at SAM step t (from 1): a number, or a callable of t."""
  return hyperparameter(t) if callable(hyperparameter) else hyperparameter


def lam_at(lam, t):
  """λ_t with t counting SAM steps from 1."""
  if lam == '1/t':
    return 1.0 / t
  if lam == '1-1/t':
    return 1.0 - 1.0 / t
  return float(at(lam, t))


def perturbation(grads, params, *, rho, lam, adaptive=False, eta=0.01, eps=0.0):
  """e = ρ(1 − λ + λ/(‖Tg‖ + ε)) T² g; T = |w| + η on weight matrices (ASAM), else I.

  A zero ``T g`` or a non-finite gradient gives e = 0.
  """
  scale = {
      name: (np.abs(params[name]) + eta) if adaptive and params[name].ndim >= 2 else 1.0
      for name in grads
  }
  scaled = {name: scale[name] * grads[name] for name in grads}
  norm = global_norm(scaled)
  if norm == 0.0 or not math.isfinite(norm):
    return {name: np.zeros_like(g) for name, g in grads.items()}
  coefficient = rho * (1.0 - lam + lam / (norm + eps))
  return {name: coefficient * scale[name] * scaled[name] for name in grads}


def textbook_sam(grads, rho):
  """Foret et al.: e = ρ g / ‖g‖."""
  return {name: rho * g / global_norm(grads) for name, g in grads.items()}


def textbook_usam(grads, rho):
  """Andriushchenko & Flammarion: e = ρ g."""
  return {name: rho * g for name, g in grads.items()}


def textbook_asam(grads, params, rho, eta):
  """Kwon et al.: e = ρ T² g / ‖T g‖, T = |w| + η on weight matrices, I on biases."""
  t = {n: np.abs(params[n]) + eta if params[n].ndim >= 2 else np.ones_like(params[n])
       for n in grads}
  norm = global_norm({n: t[n] * grads[n] for n in grads})
  return {n: rho * t[n] ** 2 * grads[n] / norm for n in grads}


class SGDMomentum:
  """b = ĝ + β b; x −= lr b, with ĝ = clip(g) + wd·x (clip to a global norm first)."""

  def __init__(self, learning_rate, momentum, *, weight_decay=0.0, clip_norm=None):
    self.lr, self.beta, self.wd, self.clip = learning_rate, momentum, weight_decay, clip_norm
    self.buffer = None

  def step(self, params, grads, value=None):
    del value
    if self.clip is not None:
      norm = global_norm(grads)
      grads = {n: g * min(1.0, self.clip / norm) for n, g in grads.items()}
    grads = {n: grads[n] + self.wd * params[n] for n in grads}
    if self.buffer is None:
      self.buffer = {n: np.zeros_like(g) for n, g in grads.items()}
    self.buffer = {n: grads[n] + self.beta * self.buffer[n] for n in grads}
    return {n: params[n] - self.lr * self.buffer[n] for n in params}


class Adam:
  """Kingma & Ba, with bias correction; ε outside the square root."""

  def __init__(self, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    self.lr, self.b1, self.b2, self.eps = learning_rate, b1, b2, eps
    self.m = self.v = None
    self.t = 0

  def step(self, params, grads, value=None):
    del value
    if self.m is None:
      self.m = {n: np.zeros_like(g) for n, g in grads.items()}
      self.v = {n: np.zeros_like(g) for n, g in grads.items()}
    self.t += 1
    self.m = {n: self.b1 * self.m[n] + (1 - self.b1) * grads[n] for n in grads}
    self.v = {n: self.b2 * self.v[n] + (1 - self.b2) * grads[n] ** 2 for n in grads}
    out = {}
    for n in params:
      m_hat = self.m[n] / (1 - self.b1 ** self.t)
      v_hat = self.v[n] / (1 - self.b2 ** self.t)
      out[n] = params[n] - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
    return out


class MomSPSMax:
  """Iterate form x_{t+1} = x_t − γ_t g_t + β(x_t − x_{t−1}), γ_t = (1−β) min{f_t/(c‖g‖²), γ_b}.

  ``f_t`` is ``value``, the loss at ``x_t``; ``g_t`` is the gradient handed to the base
  (under SAM: the gradient at ``x_t + e_t``). ``f* = 0``.
  """

  def __init__(self, c, max_learning_rate, momentum):
    self.c, self.gamma_b, self.beta = c, max_learning_rate, momentum
    self.previous = None

  def step(self, params, grads, value):
    gamma = (1 - self.beta) * min(value / (self.c * global_norm(grads) ** 2), self.gamma_b)
    previous = params if self.previous is None else self.previous
    self.previous = params
    return {n: params[n] - gamma * grads[n] + self.beta * (params[n] - previous[n])
            for n in params}


def run(params, grad_fn, base, steps, *, rho, lam, adaptive=False, eta=0.01, eps=0.0,
        every_k=1, shards=1):
  """Unified SAM for ``steps`` steps; returns the final parameters.

  ``grad_fn(params, step, shard)`` returns ``(loss, grads)`` of that step's batch (or of
  its ``shard``-th part). With ``shards > 1`` each shard perturbs with its own gradient and
  the SAM gradients are averaged (m-sharpness); the loss handed to the base is the mean.
  ``rho``, ``lam``, ``eta`` and ``eps`` are numbers or callables of ``t``, the SAM-step
  count from 1 (``lam`` also ``'1/t'`` or ``'1-1/t'``).
  """
  params = as_float64(params)
  for step in range(steps):
    losses, sam_grads = [], []
    for shard in range(shards):
      loss, grads = grad_fn(params, step, shard)
      losses.append(loss)
      if step % every_k == 0:
        t = step // every_k + 1
        e = perturbation(grads, params, rho=at(rho, t), lam=lam_at(lam, t),
                         adaptive=adaptive, eta=at(eta, t), eps=at(eps, t))
        _, grads = grad_fn({n: params[n] + e[n] for n in params}, step, shard)
      sam_grads.append(grads)
    mean_grads = {n: sum(g[n] for g in sam_grads) / shards for n in params}
    params = base.step(params, mean_grads, value=sum(losses) / shards)
  return params


def mlp_init(rng, sizes):
  """Weights ``w1, b1, ...`` of a tanh MLP with layer widths ``sizes``."""
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
    params[f'w{i}'] = rng.normal(size=(fan_in, fan_out)) / math.sqrt(fan_in)
    params[f'b{i}'] = 0.1 * rng.normal(size=(fan_out,))
  return params


def mlp_loss_and_grad(params, x, y):
  """Loss ½·mean over examples of Σ_outputs (MLP(x) − y)², tanh hidden layers; backprop."""
  layers = len(params) // 2
  activations = [np.asarray(x, np.float64)]
  for i in range(1, layers + 1):
    z = activations[-1] @ params[f'w{i}'] + params[f'b{i}']
    activations.append(np.tanh(z) if i < layers else z)
  residual = activations[-1] - y
  batch = x.shape[0]
  loss = 0.5 * float(np.sum(residual ** 2)) / batch
  grads, delta = {}, residual / batch
  for i in range(layers, 0, -1):
    grads[f'w{i}'] = activations[i - 1].T @ delta
    grads[f'b{i}'] = delta.sum(axis=0)
    if i > 1:
      delta = (delta @ params[f'w{i}'].T) * (1.0 - activations[i - 1] ** 2)
  return loss, grads
