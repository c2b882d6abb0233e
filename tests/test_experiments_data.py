"""Data loaders of experiments/: shapes, label ranges, fixed splits, resumable batches."""

import numpy as np
import pytest

from experiments import data


@pytest.fixture(scope="module")
def digits():
  return data.load_digits()


@pytest.fixture(scope="module")
def chars():
  return data.load_stdlib_chars(context_length=16)


def test_digits_shapes_ranges_and_split(digits):
  assert digits.train_x.shape == (1440, 8, 8, 1)
  assert digits.test_x.shape == (357, 8, 8, 1)
  assert digits.train_x.dtype == np.float32
  assert 0.0 <= digits.train_x.min() and digits.train_x.max() <= 1.0
  for y in (digits.train_y, digits.test_y):
    assert y.dtype == np.int32
    assert set(np.unique(y)) == set(range(10))  # stratified: every class in both splits
  # The split is fixed: loading twice gives the same arrays, and no test image is a
  # training image (the 1,797 digits contain no exact duplicates across the split).
  again = data.load_digits()
  np.testing.assert_array_equal(again.train_x, digits.train_x)
  train_rows = {row.tobytes() for row in digits.train_x}
  assert not any(row.tobytes() in train_rows for row in digits.test_x)


def test_digits_flat_for_the_mlp():
  flat = data.load_digits(flatten=True)
  assert flat.train_x.shape == (1440, 64) and flat.test_x.shape == (357, 64)


def test_stdlib_chars_windows(chars):
  assert chars.kind == "language_model" and chars.num_classes == data.VOCAB_SIZE == 128
  assert chars.test_x.shape == chars.test_y.shape
  assert chars.test_x.shape[1] == 16 and chars.test_x.shape[0] >= 100
  np.testing.assert_array_equal(chars.test_x[:, 1:], chars.test_y[:, :-1])  # shifted by one
  for ids in (chars.train_y, chars.test_x):
    assert ids.min() >= 0 and ids.max() < data.VOCAB_SIZE
  iterator = data.BatchIterator(chars, 8, seed=0, context_length=16)
  # One pass reads every character once: that is MomSPS_smooth's epoch.
  assert iterator.batches_per_pass == len(chars.train_y) // (16 * 8)
  batch = iterator.batch(3)
  assert batch["x"].shape == batch["y"].shape == (8, 16)
  np.testing.assert_array_equal(batch["x"][:, 1:], batch["y"][:, :-1])
  assert batch["x"].max() < data.VOCAB_SIZE
  # The corpus is real Python source.
  assert "def " in data.decode(chars.train_y[:5000])


def test_batches_are_a_function_of_seed_and_step(digits):
  it = data.BatchIterator(digits, 64, seed=3)
  assert it.steps_per_epoch == it.batches_per_pass == 22
  b = it.batch(30)
  assert b["x"].shape == (64, 8, 8, 1) and b["y"].shape == (64,)
  assert b["y"].min() >= 0 and b["y"].max() <= 9
  # A fresh iterator (a resumed run) gives the same batch for the same step.
  np.testing.assert_array_equal(data.BatchIterator(digits, 64, seed=3).batch(30)["x"],
                                b["x"])
  # One epoch visits distinct examples; another seed shuffles differently.
  epoch = np.concatenate([it.batch(s)["y"] for s in range(22)])
  assert len(epoch) == 22 * 64
  seen = np.concatenate([it._permutation(0)[:22 * 64]])  # pylint: disable=protected-access
  assert len(np.unique(seen)) == 22 * 64
  assert not np.array_equal(data.BatchIterator(digits, 64, seed=4).batch(0)["y"],
                            it.batch(0)["y"])
  assert not np.array_equal(it.batch(0)["y"], it.batch(22)["y"])  # new epoch, new order


def test_batch_larger_than_the_data_is_an_error(digits):
  with pytest.raises(ValueError, match="exceeds"):
    data.BatchIterator(digits, 1441, seed=0)


def test_full_batch_is_the_whole_training_split(digits):
  b = data.BatchIterator(digits, 1440, seed=0).batch(5)
  assert sorted(b["y"].tolist()) == sorted(digits.train_y.tolist())


def test_padded_evaluation_batches(digits):
  batches = data.test_batches(digits, 256)
  assert [b["x"].shape for b in batches] == [(256, 8, 8, 1)] * 2
  assert sum(b["weight"].sum() for b in batches) == 357
  np.testing.assert_array_equal(batches[1]["weight"][:101], 1.0)
  np.testing.assert_array_equal(batches[1]["weight"][101:], 0.0)
  np.testing.assert_array_equal(batches[1]["y"][:101], digits.test_y[256:])
