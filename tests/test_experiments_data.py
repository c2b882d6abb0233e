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


def _rows(x):
  return {row.tobytes() for row in x}


def test_digits_shapes_ranges_and_split(digits):
  assert digits.train_x.shape == (1152, 8, 8, 1)
  assert digits.validation_x.shape == (288, 8, 8, 1)
  assert digits.test_x.shape == (357, 8, 8, 1)
  assert digits.train_x.dtype == np.float32
  assert 0.0 <= digits.train_x.min() and digits.train_x.max() <= 1.0
  for y in (digits.train_y, digits.validation_y, digits.test_y):
    assert y.dtype == np.int32
    assert set(np.unique(y)) == set(range(10))  # stratified: every class in every split
  # The three splits are disjoint (the 1,797 digits hold 1,797 distinct images) and
  # together the whole data set.
  splits = [_rows(digits.train_x), _rows(digits.validation_x), _rows(digits.test_x)]
  assert sum(map(len, splits)) == len(set.union(*splits)) == 1797


def test_the_data_seed_draws_validation_from_train_and_keeps_test(digits):
  again = data.load_digits()
  np.testing.assert_array_equal(again.train_x, digits.train_x)
  np.testing.assert_array_equal(again.validation_x, digits.validation_x)
  other = data.load_digits(data_seed=1)
  np.testing.assert_array_equal(other.test_x, digits.test_x)
  assert _rows(other.validation_x) != _rows(digits.validation_x)
  assert _rows(other.validation_x) | _rows(other.train_x) == (
      _rows(digits.validation_x) | _rows(digits.train_x))


def test_digits_flat_for_the_mlp(digits):
  flat = data.load_digits(flatten=True)
  assert flat.train_x.shape == (1152, 64) and flat.test_x.shape == (357, 64)
  np.testing.assert_array_equal(flat.validation_x, digits.validation_x.reshape(288, 64))


def test_stdlib_chars_windows(chars):
  assert chars.kind == "language_model" and chars.num_classes == data.VOCAB_SIZE == 128
  assert chars.test_x.shape == chars.test_y.shape
  assert chars.test_x.shape == chars.validation_x.shape == (256, 16)
  for split in ("validation", "test"):  # targets: the inputs shifted by one
    np.testing.assert_array_equal(getattr(chars, f"{split}_x")[:, 1:],
                                  getattr(chars, f"{split}_y")[:, :-1])
  for ids in (chars.train_y, chars.test_x, chars.validation_x):
    assert ids.min() >= 0 and ids.max() < data.VOCAB_SIZE
  iterator = data.BatchIterator(chars, 8, seed=0, context_length=16)
  # One pass reads every training character once: that is MomSPS_smooth's epoch.
  block = len(chars.train_y) // data.STDLIB_BLOCKS
  assert chars.num_train_tokens == len(chars.train_y) - block
  assert iterator.batches_per_pass == chars.num_train_tokens // (16 * 8)
  batch = iterator.batch(3)
  assert batch["x"].shape == batch["y"].shape == (8, 16)
  np.testing.assert_array_equal(batch["x"][:, 1:], batch["y"][:, :-1])
  assert batch["x"].max() < data.VOCAB_SIZE
  # The corpus is real Python source.
  assert "def " in data.decode(chars.train_y[:5000])


def _validation_block(chars, window=17):
  """The one block whose removal leaves exactly the training window starts."""
  text, block = len(chars.train_y), len(chars.train_y) // data.STDLIB_BLOCKS
  starts = np.arange(text - window + 1)
  found = [k * block for k in range(data.STDLIB_BLOCKS)
           if np.array_equal(starts[(starts + window <= k * block)
                                    | (starts >= (k + 1) * block)], chars.train_x)]
  assert len(found) == 1
  return found[0], block


def test_stdlib_validation_is_a_block_no_training_window_touches(chars):
  first, block = _validation_block(chars)
  windows = chars.train_y[first:first + 256 * 17].reshape(256, 17)
  np.testing.assert_array_equal(chars.validation_x, windows[:, :-1])
  assert first + 256 * 17 <= first + block
  other = data.load_stdlib_chars(context_length=16, data_seed=1)
  np.testing.assert_array_equal(other.test_x, chars.test_x)
  assert _validation_block(other)[0] != first  # this data seed draws another block


def test_batches_are_a_function_of_seed_and_step(digits):
  it = data.BatchIterator(digits, 64, seed=3)
  assert it.steps_per_epoch == it.batches_per_pass == 18
  b = it.batch(30)
  assert b["x"].shape == (64, 8, 8, 1) and b["y"].shape == (64,)
  assert b["y"].min() >= 0 and b["y"].max() <= 9
  # A fresh iterator (a resumed run) gives the same batch for the same step.
  np.testing.assert_array_equal(data.BatchIterator(digits, 64, seed=3).batch(30)["x"],
                                b["x"])
  # One epoch visits distinct examples; another seed shuffles differently.
  epoch = np.concatenate([it.batch(s)["x"] for s in range(18)])
  assert len(_rows(epoch)) == 18 * 64 == digits.num_train
  assert not np.array_equal(data.BatchIterator(digits, 64, seed=4).batch(0)["y"],
                            it.batch(0)["y"])
  assert not np.array_equal(it.batch(0)["y"], it.batch(18)["y"])  # new epoch, new order


def test_batch_larger_than_the_data_is_an_error(digits):
  with pytest.raises(ValueError, match="exceeds"):
    data.BatchIterator(digits, 1153, seed=0)


def test_full_batch_is_the_whole_training_split(digits):
  b = data.BatchIterator(digits, 1152, seed=0).batch(5)
  assert sorted(b["y"].tolist()) == sorted(digits.train_y.tolist())


def test_padded_evaluation_batches(digits):
  batches = data.split_batches(digits, "test", 256)
  assert [b["x"].shape for b in batches] == [(256, 8, 8, 1)] * 2
  assert sum(b["weight"].sum() for b in batches) == 357
  np.testing.assert_array_equal(batches[1]["weight"][:101], 1.0)
  np.testing.assert_array_equal(batches[1]["weight"][101:], 0.0)
  np.testing.assert_array_equal(batches[1]["y"][:101], digits.test_y[256:])
