"""Losses and evaluation of the experiment models: cross-entropy, accuracy, perplexity.

Classification and the character language model share one loss: the softmax
cross-entropy of integer labels (per example, or per character), computed in float32. A
model with a single output is a regressor (one class would make cross-entropy 0): its loss
is the squared error ``(f(x) - y)^2`` and its "accuracy" the share of examples predicted
within ``REGRESSION_TOLERANCE`` of the target. Evaluation sums over padded batches
(``weight`` 0 marks padding) in float64 on the host.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


REGRESSION_TOLERANCE = 0.05


def _losses(logits, labels):
  """Per-example (per-token) loss and correctness: cross-entropy, or squared error."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == 1:
    error = (logits - labels)[..., 0]
    return jnp.square(error), jnp.abs(error) < REGRESSION_TOLERANCE
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss, (jnp.argmax(logits, -1) == labels)


def make_loss_fn(model):
  """``loss_fn(params, model_state, batch) -> (loss, (model_state, {'accuracy'}))``.

  Training mode: BatchNorm uses batch statistics and returns its updated running averages
  (``model_state`` is ``{}`` for models without BatchNorm).
  """
  def loss_fn(params, model_state, batch):
    variables = {"params": params, **model_state}
    if model_state:
      logits, new_state = model.apply(variables, batch["x"], train=True,
                                      mutable=list(model_state))
    else:
      logits, new_state = model.apply(variables, batch["x"], train=True), model_state
    loss, correct = _losses(logits, batch["y"])
    return loss.mean(), (dict(new_state), {"accuracy": correct.mean()})
  return loss_fn


def make_eval_loss(model):
  """``loss(params, model_state, batch)``: mean loss with BatchNorm in eval mode."""
  def loss(params, model_state, batch):
    logits = model.apply({"params": params, **model_state}, batch["x"], train=False)
    return _losses(logits, batch["y"])[0].mean()
  return loss


def _eval_sums(model, params, model_state, batch):
  """Summed loss, correct predictions and count over the real (weight 1) examples."""
  logits = model.apply({"params": params, **model_state}, batch["x"], train=False)
  loss, correct = _losses(logits, batch["y"])
  weight = jnp.broadcast_to(
      batch["weight"].reshape(batch["weight"].shape + (1,) * (loss.ndim - 1)), loss.shape)
  return (loss * weight).sum(), (correct * weight).sum(), weight.sum()


def make_eval_fn(model):
  """``eval_fn(params, model_state, batch) -> (loss sum, correct, count)``, jitted."""
  return jax.jit(functools.partial(_eval_sums, model))


def evaluate(eval_fn, params, model_state, batches) -> dict[str, float]:
  """Mean loss and accuracy over ``batches`` (and perplexity = exp(loss))."""
  total = np.zeros(3)
  for batch in batches:
    total += np.asarray(jax.device_get(eval_fn(params, model_state, batch)), np.float64)
  loss = total[0] / total[2]
  return {"loss": loss, "accuracy": total[1] / total[2],
          "perplexity": math.exp(loss) if loss < 700 else math.inf}
