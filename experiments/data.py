"""Datasets that ship with the project's dependencies, and a resumable batch iterator.

Nothing is downloaded:

* ``digits``: the 8x8 handwritten digits bundled with scikit-learn
  (``sklearn.datasets.load_digits``; 1,797 images, 10 classes). A fixed stratified split
  keeps 1,440 images for training (divisible by 1, 2, 4, ..., 32 devices) and 357 for test.
* ``stdlib_chars``: a character-level corpus made of a fixed list of Python standard-library
  source files (read from ``os.path.dirname(os.__file__)``). Characters are mapped to a
  fixed 128-symbol ASCII vocabulary, the first 90% of the text is the training split and
  the last 10% the test split. The text depends on the Python version; its SHA-256 is
  recorded with every run.

Batches are a pure function of ``(seed, step)``: each epoch is a fresh permutation drawn
from ``numpy.random.default_rng((seed, epoch))``, so a run resumed at step ``t`` sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

DIGITS_TEST_SIZE = 357
# Files of the character corpus, in order. Plain prose-like code with docstrings.
STDLIB_FILES = ("textwrap.py", "functools.py", "os.py", "dataclasses.py", "argparse.py")
VOCAB_SIZE = 128  # ASCII; any other character becomes '?'.

DATASETS = ("digits", "stdlib_chars")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """In-memory arrays of one dataset; ``kind`` is 'classification' or 'language_model'."""
  name: str
  kind: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  fingerprint: str  # SHA-256 prefix of the raw data, recorded next to the results.

  @property
  def num_train(self) -> int:
    return len(self.train_x)


def load_digits(flatten: bool = False) -> Dataset:
  """The scikit-learn 8x8 digits, scaled to [0, 1], NHWC (or flat) float32, fixed split."""
  from sklearn import datasets, model_selection  # pylint: disable=import-outside-toplevel

  raw = datasets.load_digits()
  x = (raw.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1)
  y = raw.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      x, y, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=y)
  if flatten:
    train_x = train_x.reshape(len(train_x), -1)
    test_x = test_x.reshape(len(test_x), -1)
  fingerprint = hashlib.sha256(raw.images.tobytes()).hexdigest()[:16]
  return Dataset("digits", "classification", train_x, train_y, test_x, test_y, 10,
                 fingerprint)


def stdlib_text() -> str:
  """The concatenated source of ``STDLIB_FILES`` from this interpreter's standard library."""
  root = os.path.dirname(os.__file__)
  parts = []
  for name in STDLIB_FILES:
    with open(os.path.join(root, name), encoding="utf-8") as f:
      parts.append(f.read())
  return "\n".join(parts)


def encode(text: str) -> np.ndarray:
  """Characters to ids in ``[0, VOCAB_SIZE)``; non-ASCII characters become '?'."""
  codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
  return codes.astype(np.int32)


def decode(ids) -> str:
  return bytes(int(i) for i in ids).decode("ascii")


def load_stdlib_chars(context_length: int = 64, max_chars: int = 0,
                      num_test_windows: int = 256) -> Dataset:
  """Character windows of the standard-library corpus.

  Training examples are every ``context_length + 1``-long window start of the train split
  (``train_x`` holds the start offsets; the batcher slices the text); the test set is
  ``num_test_windows`` evenly spaced, non-overlapping windows of the test split. Targets are
  the inputs shifted by one character.
  """
  text = stdlib_text()
  if max_chars:
    text = text[:max_chars]
  ids = encode(text)
  split = int(0.9 * len(ids))
  train_ids, test_ids = ids[:split], ids[split:]
  window = context_length + 1
  starts = np.arange(len(train_ids) - window + 1, dtype=np.int64)
  num_test = min(num_test_windows, len(test_ids) // window)
  if num_test < 1:
    raise ValueError(f"test split ({len(test_ids)} chars) is shorter than one window "
                     f"({window}); use a smaller context_length or a larger max_chars.")
  test = test_ids[:num_test * window].reshape(num_test, window)
  fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
  return Dataset("stdlib_chars", "language_model",
                 train_x=starts, train_y=train_ids,  # text kept in train_y; see batch()
                 test_x=test[:, :-1].copy(), test_y=test[:, 1:].copy(),
                 num_classes=VOCAB_SIZE, fingerprint=fingerprint)


def load(config) -> Dataset:
  """The dataset named by ``config.dataset`` (``config.model`` decides flattening)."""
  if config.dataset == "digits":
    return load_digits(flatten=config.model.name == "mlp")
  if config.dataset == "stdlib_chars":
    return load_stdlib_chars(config.context_length, config.get("max_chars", 0))
  raise ValueError(f"unknown dataset {config.dataset!r}; valid: {', '.join(DATASETS)}")


class BatchIterator:
  """Shuffled mini-batches as a pure function of ``(seed, step)`` (drop-last epochs)."""

  def __init__(self, dataset: Dataset, batch_size: int, seed: int,
               context_length: int | None = None):
    if batch_size > dataset.num_train:
      raise ValueError(f"batch_size={batch_size} exceeds the {dataset.num_train} "
                       f"training examples of {dataset.name!r}")
    self.dataset = dataset
    self.batch_size = batch_size
    self.seed = seed
    self.context_length = context_length
    self.steps_per_epoch = dataset.num_train // batch_size
    # Batches in one pass over the data, the "epoch" of MomSPS_smooth's cap: for the
    # language model every character read once (non-overlapping windows), not every
    # window start (of which there are one per character).
    if dataset.kind == "language_model":
      self.batches_per_pass = max(1, len(dataset.train_y) // (context_length * batch_size))
    else:
      self.batches_per_pass = self.steps_per_epoch
    self._epoch = -1
    self._perm = None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      rng = np.random.default_rng((self.seed, epoch))
      self._perm = rng.permutation(self.dataset.num_train)
      self._epoch = epoch
    return self._perm

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of global step ``step`` (0-based): ``{'x': ..., 'y': ...}``."""
    epoch, i = divmod(step, self.steps_per_epoch)
    idx = self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
    d = self.dataset
    if d.kind == "language_model":
      offsets = d.train_x[idx][:, None] + np.arange(self.context_length + 1)
      window = d.train_y[offsets]
      return {"x": window[:, :-1], "y": window[:, 1:]}
    return {"x": d.train_x[idx], "y": d.train_y[idx]}


def batched(x: np.ndarray, y: np.ndarray, batch_size: int) -> list[dict[str, np.ndarray]]:
  """``(x, y)`` in fixed order, in batches of ``batch_size`` examples.

  The last batch is zero-padded to the same shape (one compiled evaluation for every
  batch and every split); ``weight`` is 1 for real examples and 0 for padding.
  """
  size = batch_size
  out = []
  for i in range(0, len(x), size):
    bx, by = x[i:i + size], y[i:i + size]
    pad = size - len(bx)
    weight = np.concatenate([np.ones(len(bx), np.float32), np.zeros(pad, np.float32)])
    if pad:
      bx = np.concatenate([bx, np.zeros((pad,) + bx.shape[1:], bx.dtype)])
      by = np.concatenate([by, np.zeros((pad,) + by.shape[1:], by.dtype)])
    out.append({"x": bx, "y": by, "weight": weight})
  return out


def test_batches(dataset: Dataset, batch_size: int) -> list[dict[str, np.ndarray]]:
  """The test split in fixed order, in padded batches (see :func:`batched`)."""
  return batched(dataset.test_x, dataset.test_y, batch_size)
