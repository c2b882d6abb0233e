"""Datasets generated or shipped with the project's dependencies; a resumable batch iterator.

Nothing is downloaded:

* ``mnist1d`` / ``mnist1d_40k``: MNIST-1D (Greydanus, 2020), 1-D signals of the ten digit
  templates under random padding, scaling, translation, correlated and i.i.d. noise and
  shear, 40 features and 10 classes. Made by the ``mnist1d`` package's generator
  (``make_dataset`` with its default ``get_dataset_args()``, seed 42; ``get_dataset``,
  which downloads, is never called) with 5,000 (the published data set) or 50,000
  examples: 80% train, 20% test (the package's split). A validation split of 10% of the
  training examples is drawn with the data seed. Generated arrays are cached in
  ``<tmp>/optaxplus/data`` (the 50,000 take ~10 s to generate).
* ``teacher_student``: regression on the outputs of a fixed random ReLU MLP (the
  teacher, 20 inputs, hidden 32) of Gaussian inputs, learnt by a wider student; the
  targets are the teacher's exact outputs, so a student that can represent the teacher
  interpolates and the loss minimum is exactly 0 (the setting Polyak steps assume).

* ``digits``: the 8x8 handwritten digits bundled with scikit-learn
  (``sklearn.datasets.load_digits``; 1,797 images, 10 classes). A fixed stratified split
  (``random_state=0``) keeps 357 images for test; from the other 1,440 a stratified split
  drawn with the data seed keeps 288 for validation and 1,152 for training (divisible by
  1, 2, 4, ..., 128 devices).
* ``stdlib_chars``: a character-level corpus made of a fixed list of Python standard-library
  source files (read from ``os.path.dirname(os.__file__)``). Characters are mapped to a
  fixed 128-symbol ASCII vocabulary; the last 10% of the text is the test split; the first
  90% is cut into 10 equal blocks, one of them (drawn with the data seed) is the
  validation split and training windows never overlap it. The text depends on the Python
  version; its SHA-256 is recorded with every run.

Validation data is for model selection (learning rates, rho, ...); the test split is only
evaluated, never used to choose. The splits depend on the data seed (``config.data_seed``),
not on the run's seed, so every seed of a sweep sees the same three splits.

Batches are a pure function of ``(seed, step)``: each epoch is a fresh permutation drawn
from ``numpy.random.default_rng((seed, epoch))``, so a run resumed at step ``t`` sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import tempfile

import numpy as np

DIGITS_TEST_SIZE = 357
DIGITS_VALIDATION_SIZE = 288
STDLIB_TEST_FRACTION = 0.1
STDLIB_BLOCKS = 10  # of the training text, one of which is the validation split
# Files of the character corpus, in order: code with docstrings, about 1.0 million
# characters on Python 3.11.
STDLIB_FILES = ("textwrap.py", "functools.py", "os.py", "dataclasses.py", "argparse.py",
                "inspect.py", "typing.py", "enum.py", "pathlib.py", "collections/__init__.py",
                "subprocess.py", "logging/__init__.py", "random.py", "tempfile.py",
                "shutil.py", "contextlib.py")
VOCAB_SIZE = 128  # ASCII; any other character becomes '?'.
MNIST1D_SIZES = {"mnist1d": 5_000, "mnist1d_40k": 50_000}  # examples generated, 80% train
MNIST1D_VALIDATION_FRACTION = 0.1  # of the training examples
# Teacher-student regression: input dimension, teacher width, examples per split.
TEACHER_INPUTS, TEACHER_HIDDEN = 20, 32
TEACHER_SPLITS = {"train": 4096, "validation": 1024, "test": 1024}

DATASETS = ("mnist1d", "mnist1d_40k", "teacher_student", "digits", "stdlib_chars")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """In-memory arrays of one dataset.

  ``kind`` is 'classification', 'regression' (``*_y`` float targets, ``num_classes`` the
  output dimension) or 'language_model'.

  For language models ``train_y`` is the training text and ``train_x`` the start offsets
  of its training windows (see :meth:`BatchIterator.batch`); the validation and test
  splits are windows, inputs in ``*_x`` and next characters in ``*_y``.
  """
  name: str
  kind: str
  train_x: np.ndarray
  train_y: np.ndarray
  validation_x: np.ndarray
  validation_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  fingerprint: str  # SHA-256 prefix of the raw data, recorded next to the results.
  num_train_tokens: int = 0  # language models: characters the training windows cover

  @property
  def num_train(self) -> int:
    return len(self.train_x)


def load_digits(flatten: bool = False, data_seed: int = 0) -> Dataset:
  """The scikit-learn 8x8 digits, scaled to [0, 1], NHWC (or flat) float32.

  Args:
    flatten: flat 64-pixel rows (for the MLP) instead of 8x8x1 images.
    data_seed: draws the validation split from the 1,440 non-test images (the test split
      is the same for every seed).
  """
  from sklearn import datasets, model_selection  # pylint: disable=import-outside-toplevel

  raw = datasets.load_digits()
  x = (raw.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1)
  if flatten:
    x = x.reshape(len(x), -1)
  y = raw.target.astype(np.int32)
  rest_x, test_x, rest_y, test_y = model_selection.train_test_split(
      x, y, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=y)
  train_x, validation_x, train_y, validation_y = model_selection.train_test_split(
      rest_x, rest_y, test_size=DIGITS_VALIDATION_SIZE, random_state=data_seed,
      stratify=rest_y)
  fingerprint = hashlib.sha256(raw.images.tobytes()).hexdigest()[:16]
  return Dataset("digits", "classification", train_x, train_y, validation_x, validation_y,
                 test_x, test_y, 10, fingerprint)


def _cache_dir() -> str:
  return os.path.join(tempfile.gettempdir(), "optaxplus", "data")


def _mnist1d_arrays(num_samples: int) -> dict[str, np.ndarray]:
  """The ``mnist1d`` package's generator at its default arguments, ``num_samples`` examples.

  It draws from the global ``random`` and ``numpy.random`` states (seeding them with the
  arguments' seed, 42); both are restored afterwards.
  """
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=import-outside-toplevel

  args = get_dataset_args()
  args.num_samples = num_samples
  python_state, numpy_state = random.getstate(), np.random.get_state()
  try:
    raw = make_dataset(args)
  finally:
    random.setstate(python_state)
    np.random.set_state(numpy_state)
  return {k: raw[k] for k in ("x", "y", "x_test", "y_test")}


def mnist1d_arrays(num_samples: int) -> dict[str, np.ndarray]:
  """MNIST-1D's train and test arrays (``x``, ``y``, ``x_test``, ``y_test``), cached."""
  path = os.path.join(_cache_dir(), f"mnist1d_{num_samples}_seed42.npz")
  if os.path.exists(path):
    with np.load(path) as f:
      return dict(f)
  arrays = _mnist1d_arrays(num_samples)
  os.makedirs(_cache_dir(), exist_ok=True)
  temporary = f"{path}.{os.getpid()}.npz"
  np.savez(temporary, **arrays)
  os.replace(temporary, path)  # atomic: a concurrent reader sees all of it or nothing
  return arrays


def load_mnist1d(name: str = "mnist1d", data_seed: int = 0) -> Dataset:
  """MNIST-1D as ``(N, 40, 1)`` float32 signals (channels last) and int32 labels.

  Args:
    name: ``'mnist1d'`` (5,000 examples: 4,000 train, 1,000 test; the published data
      set) or ``'mnist1d_40k'`` (50,000: 40,000 train, 10,000 test).
    data_seed: draws the validation split (10% of the training examples); the test split
      is the package's.
  """
  arrays = mnist1d_arrays(MNIST1D_SIZES[name])
  x = arrays["x"].astype(np.float32)[..., None]
  y = arrays["y"].astype(np.int32)
  order = np.random.default_rng(data_seed).permutation(len(x))
  num_validation = int(MNIST1D_VALIDATION_FRACTION * len(x))
  validation, train = order[:num_validation], order[num_validation:]
  test_x = arrays["x_test"].astype(np.float32)[..., None]
  test_y = arrays["y_test"].astype(np.int32)
  fingerprint = hashlib.sha256(x.tobytes() + test_x.tobytes()).hexdigest()[:16]
  return Dataset(name, "classification", x[train], y[train], x[validation], y[validation],
                 test_x, test_y, 10, fingerprint)


def teacher_outputs(x: np.ndarray, seed: int = 0) -> np.ndarray:
  """The teacher: ``W2 relu(W1 x + b1)`` with He-normal weights drawn from ``seed``."""
  rng = np.random.default_rng((seed, 1))
  w1 = rng.normal(0.0, np.sqrt(2.0 / TEACHER_INPUTS), (TEACHER_INPUTS, TEACHER_HIDDEN))
  b1 = rng.normal(0.0, 0.1, TEACHER_HIDDEN)
  w2 = rng.normal(0.0, np.sqrt(1.0 / TEACHER_HIDDEN), (TEACHER_HIDDEN, 1))
  return np.maximum(x @ w1 + b1, 0.0) @ w2


def load_teacher_student(data_seed: int = 0) -> Dataset:
  """Teacher-student regression: Gaussian inputs, the teacher's exact (noise-free) outputs.

  The teacher is fixed (seed 0); ``data_seed`` draws the inputs of the three splits
  (4,096 train, 1,024 validation, 1,024 test). Targets are float32 of shape ``(N, 1)``.
  """
  rng = np.random.default_rng((data_seed, 0))
  splits = {}
  for split, size in TEACHER_SPLITS.items():
    x = rng.normal(size=(size, TEACHER_INPUTS))
    splits[split] = (x.astype(np.float32), teacher_outputs(x).astype(np.float32))
  fingerprint = hashlib.sha256(b"".join(a.tobytes() for xy in splits.values()
                                        for a in xy)).hexdigest()[:16]
  return Dataset("teacher_student", "regression", *splits["train"], *splits["validation"],
                 *splits["test"], num_classes=1, fingerprint=fingerprint)


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


def _windows(ids: np.ndarray, window: int, count: int, split: str) -> np.ndarray:
  """``count`` non-overlapping ``window``-long windows of ``ids`` (or all that fit)."""
  count = min(count, len(ids) // window)
  if count < 1:
    raise ValueError(f"the {split} split ({len(ids)} characters) is shorter than one "
                     f"window ({window}); use a smaller context_length or a larger "
                     "max_chars.")
  return ids[:count * window].reshape(count, window)


def load_stdlib_chars(context_length: int = 64, max_chars: int = 0,
                      num_eval_windows: int = 256, data_seed: int = 0) -> Dataset:
  """Character windows of the standard-library corpus.

  Training examples are the ``context_length + 1``-long windows of the training text that
  do not overlap the validation block (``train_x`` holds their start offsets; the batcher
  slices the text); validation and test are ``num_eval_windows`` non-overlapping windows
  of their split. Targets are the inputs shifted by one character.

  Args:
    context_length: characters per example.
    max_chars: keep only the first ``max_chars`` characters of the corpus (0: all).
    num_eval_windows: windows in the validation and in the test split (at most).
    data_seed: picks which of the ``STDLIB_BLOCKS`` blocks of the training text is the
      validation split.
  """
  text = stdlib_text()
  if max_chars:
    text = text[:max_chars]
  ids = encode(text)
  split = int((1 - STDLIB_TEST_FRACTION) * len(ids))
  train_ids, test_ids = ids[:split], ids[split:]
  window = context_length + 1
  block = len(train_ids) // STDLIB_BLOCKS
  first = int(np.random.default_rng(data_seed).integers(STDLIB_BLOCKS)) * block
  validation = _windows(train_ids[first:first + block], window, num_eval_windows,
                        "validation")
  test = _windows(test_ids, window, num_eval_windows, "test")
  starts = np.arange(len(train_ids) - window + 1, dtype=np.int64)
  # A training window [s, s + window) must end before the block or start after it.
  starts = starts[(starts + window <= first) | (starts >= first + block)]
  fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
  return Dataset("stdlib_chars", "language_model",
                 train_x=starts, train_y=train_ids,  # text kept in train_y; see batch()
                 validation_x=validation[:, :-1].copy(),
                 validation_y=validation[:, 1:].copy(),
                 test_x=test[:, :-1].copy(), test_y=test[:, 1:].copy(),
                 num_classes=VOCAB_SIZE, fingerprint=fingerprint,
                 num_train_tokens=len(train_ids) - block)


def load(config) -> Dataset:
  """The dataset named by ``config.dataset`` (``config.model`` decides flattening)."""
  if config.dataset in MNIST1D_SIZES:
    return load_mnist1d(config.dataset, data_seed=config.data_seed)
  if config.dataset == "teacher_student":
    return load_teacher_student(data_seed=config.data_seed)
  if config.dataset == "digits":
    return load_digits(flatten=config.model.name == "mlp", data_seed=config.data_seed)
  if config.dataset == "stdlib_chars":
    return load_stdlib_chars(config.context_length, config.max_chars,
                             data_seed=config.data_seed)
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
      self.batches_per_pass = max(1, dataset.num_train_tokens // (context_length * batch_size))
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
    return train_examples(self.dataset, idx, self.context_length)


def train_examples(dataset: Dataset, idx: np.ndarray,
                   context_length: int | None = None) -> dict[str, np.ndarray]:
  """Training examples ``idx``: images and labels, or (LM) windows of the text."""
  if dataset.kind == "language_model":
    offsets = dataset.train_x[idx][:, None] + np.arange(context_length + 1)
    window = dataset.train_y[offsets]
    return {"x": window[:, :-1], "y": window[:, 1:]}
  return {"x": dataset.train_x[idx], "y": dataset.train_y[idx]}


def fixed_train_examples(dataset: Dataset, size: int,
                         context_length: int | None = None) -> dict[str, np.ndarray]:
  """``size`` evenly spaced training examples (all of them if there are fewer)."""
  size = min(size, dataset.num_train)
  idx = np.linspace(0, dataset.num_train - 1, size).astype(np.int64)
  return train_examples(dataset, idx, context_length)


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


def split_batches(dataset: Dataset, split: str,
                  batch_size: int) -> list[dict[str, np.ndarray]]:
  """The ``'validation'`` or ``'test'`` split in fixed order, in padded batches."""
  return batched(getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y"), batch_size)
