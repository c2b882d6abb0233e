"""Data loaders of experiments/: shapes, label ranges, fixed splits, resumable batches."""

import os
import random
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import data, evaluation, models


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


# --- MNIST-1D and teacher-student -------------------------------------------------------
@pytest.fixture(scope="module")
def mnist1d_generated(tmp_path_factory):
  """MNIST-1D generated afresh (empty cache) with every socket refused: no network."""
  cache = str(tmp_path_factory.mktemp("cache"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(data, "_cache_dir", lambda: cache)

    def refuse(*args, **kwargs):
      raise OSError("network access in a test")
    patch.setattr(socket, "socket", refuse)
    patch.setattr(socket, "create_connection", refuse)
    return data.load_mnist1d(), cache


def test_mnist1d_shapes_labels_and_splits(mnist1d_generated):
  d, cache = mnist1d_generated
  assert os.listdir(cache) == ["mnist1d_5000_seed42.npz"]
  assert d.kind == "classification" and d.num_classes == 10
  assert d.train_x.shape == (3600, 40, 1) and d.validation_x.shape == (400, 40, 1)
  assert d.test_x.shape == (1000, 40, 1)
  for x in (d.train_x, d.validation_x, d.test_x):
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
  for y in (d.train_y, d.validation_y, d.test_y):
    assert y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
  # The package standardizes the whole data set: mean 0 and std 1 over all 200,000 values.
  everything = np.concatenate([d.train_x, d.validation_x, d.test_x]).astype(np.float64)
  np.testing.assert_allclose([everything.mean(), everything.std()], [0.0, 1.0], atol=1e-5)
  splits = [_rows(d.train_x), _rows(d.validation_x), _rows(d.test_x)]
  assert sum(map(len, splits)) == len(set.union(*splits)) == 5000


def test_mnist1d_is_deterministic_and_leaves_global_random_state(mnist1d_generated):
  d, _ = mnist1d_generated
  np.random.seed(7)
  random.seed(7)
  expected = np.random.rand(), random.random()
  np.random.seed(7)
  random.seed(7)
  again = data._mnist1d_arrays(5000)  # generated again, not read from the cache
  assert (np.random.rand(), random.random()) == expected
  train = np.concatenate([d.train_x, d.validation_x])[..., 0]
  assert _rows(train.astype(np.float32)) == _rows(again["x"].astype(np.float32))
  np.testing.assert_array_equal(d.test_x[..., 0], again["x_test"].astype(np.float32))
  np.testing.assert_array_equal(d.test_y, again["y_test"])
  cached = data.load_mnist1d()  # another data seed: another validation split, same test
  other = data.load_mnist1d(data_seed=1)
  assert cached.fingerprint == other.fingerprint == d.fingerprint
  np.testing.assert_array_equal(other.test_x, d.test_x)
  assert _rows(other.validation_x) != _rows(d.validation_x)


def test_teacher_student_targets_are_the_teacher_and_interpolable():
  d = data.load_teacher_student()
  assert d.kind == "regression" and d.num_classes == 1
  sizes = {split: len(getattr(d, f"{split}_x")) for split in data.TEACHER_SPLITS}
  assert sizes == data.TEACHER_SPLITS
  assert d.train_x.shape[1] == data.TEACHER_INPUTS and d.train_y.shape == (4096, 1)
  np.testing.assert_allclose(d.test_y, data.teacher_outputs(d.test_x.astype(np.float64)),
                             rtol=1e-5, atol=1e-6)
  assert 0.3 < d.train_y.std() < 3.0  # not a degenerate (dead-ReLU) teacher
  np.testing.assert_array_equal(data.load_teacher_student().train_y, d.train_y)
  assert not np.array_equal(data.load_teacher_student(data_seed=1).train_x, d.train_x)
  # A student one layer of 128 ReLUs wide holds the teacher exactly (its first 32 units
  # copy the teacher's, the rest are off): loss 0 is reachable.
  rng = np.random.default_rng((0, 1))
  w1 = rng.normal(0.0, np.sqrt(2.0 / data.TEACHER_INPUTS),
                  (data.TEACHER_INPUTS, data.TEACHER_HIDDEN))
  b1 = rng.normal(0.0, 0.1, data.TEACHER_HIDDEN)
  w2 = rng.normal(0.0, np.sqrt(1.0 / data.TEACHER_HIDDEN), (data.TEACHER_HIDDEN, 1))
  model = models.MLP(hidden=(128,), num_classes=1)
  pad = 128 - data.TEACHER_HIDDEN
  params = {"Dense_0": {"kernel": np.pad(w1, ((0, 0), (0, pad))), "bias": np.pad(b1, (0, pad))},
            "Dense_1": {"kernel": np.pad(w2, ((0, pad), (0, 0))), "bias": np.zeros(1)}}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  result = evaluation.evaluate(evaluation.make_eval_fn(model), params, {},
                               data.split_batches(d, "test", 512))
  assert result["loss"] < 1e-10 and result["accuracy"] == 1.0


def test_stdlib_corpus_is_the_listed_files():
  text = data.stdlib_text()
  root = os.path.dirname(os.__file__)
  sizes = [len(open(os.path.join(root, name), encoding="utf-8").read())
           for name in data.STDLIB_FILES]
  assert len(text) == sum(sizes) + len(sizes) - 1  # joined by newlines
  assert len(data.STDLIB_FILES) == len(set(data.STDLIB_FILES)) == 16 and len(text) > 900_000
