"""Flax Linen models small enough for CPU: an MLP, a ResNet-style CNN, a decoder-only LM.

Every model is called as ``model.apply(variables, x, train=...)`` and returns logits (or,
for regression, its outputs); the CNN keeps BatchNorm statistics in the ``batch_stats``
collection. The CNN is 1-D or 2-D after its input: ``(N, length, channels)`` signals
(MNIST-1D) get kernels of size 3, ``(N, H, W, channels)`` images 3x3.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

MODELS = ("mlp", "cnn", "transformer")


class MLP(nn.Module):
  """Fully connected ReLU network on flat inputs."""
  hidden: Sequence[int] = (64, 64)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class ResidualBlock(nn.Module):
  """conv-BN-ReLU-conv-BN plus a (projected) shortcut, then ReLU."""
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    spatial = x.ndim - 2
    y = nn.Conv(self.features, (3,) * spatial, self.strides, use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.features, (3,) * spatial, use_bias=False)(y)
    y = norm()(y)
    if x.shape != y.shape:
      x = nn.Conv(self.features, (1,) * spatial, self.strides, use_bias=False)(x)
      x = norm()(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A small ResNet: a stem, one residual block per stage (stride 2 after the first),
  global average pooling; 1-D or 2-D after the input's rank."""
  stage_features: Sequence[int] = (16, 32)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    spatial = tuple(range(1, x.ndim - 1))
    x = nn.Conv(self.stage_features[0], (3,) * len(spatial), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    for i, features in enumerate(self.stage_features):
      x = ResidualBlock(features, strides=1 if i == 0 else 2)(x, train)
    x = jnp.mean(x, axis=spatial)
    return nn.Dense(self.num_classes)(x)


class DecoderBlock(nn.Module):
  """Pre-LayerNorm causal self-attention and GELU MLP."""
  num_heads: int
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
    y = nn.SelfAttention(num_heads=self.num_heads)(nn.LayerNorm()(x), mask=mask)
    x = x + y
    y = nn.Dense(self.mlp_ratio * width)(nn.LayerNorm()(x))
    return x + nn.Dense(width)(nn.gelu(y))


class TransformerLM(nn.Module):
  """A decoder-only character transformer with learned positions."""
  vocab_size: int = 128
  context_length: int = 64
  width: int = 64
  depth: int = 2
  num_heads: int = 4

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    del train
    x = nn.Embed(self.vocab_size, self.width)(tokens)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02),
                     (self.context_length, self.width))
    x = x + pos[:tokens.shape[1]]
    for _ in range(self.depth):
      x = DecoderBlock(self.num_heads)(x)
    return nn.Dense(self.vocab_size)(nn.LayerNorm()(x))


def create_model(config, num_classes: int) -> nn.Module:
  """The model named by ``config.model.name`` with the other ``config.model`` keys."""
  m = config.model
  if m.name == "mlp":
    return MLP(hidden=tuple(m.hidden), num_classes=num_classes)
  if m.name == "cnn":
    return ResNet(stage_features=tuple(m.stage_features), num_classes=num_classes)
  if m.name == "transformer":
    return TransformerLM(vocab_size=num_classes, context_length=config.context_length,
                         width=m.width, depth=m.depth, num_heads=m.num_heads)
  raise ValueError(f"unknown model {m.name!r}; valid: {', '.join(MODELS)}")
