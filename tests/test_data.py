"""pyopt.data: the shipped Boston housing split (against Keras's own loader) and Dataset."""

import hashlib
from importlib import resources

import numpy as np
import pytest
import tensorflow as tf

from pyopt.data import Dataset, boston_housing

# Check values from the data README (/work/shared/data/README.md), independent of our loader.
README_SHA256 = "fd6aae7c42ed5998b4157a6149aa35d47c60fc0664c5bcfea5f3df4f423376cc"
Y_TRAIN_MEAN = 22.395049504950492
Y_TEST_MEAN = 23.07843137254902
X_TRAIN_0 = [1.23247, 0, 8.14, 0, 0.538, 6.142, 91.7, 3.9769, 4, 307, 21, 396.9, 18.72]
Y_TRAIN_5 = [15.2, 42.3, 50.0, 21.1, 17.7]


# --- boston_housing -------------------------------------------------------------------------
def test_packaged_csv_is_the_readme_file():
    raw = resources.files("pyopt.data").joinpath("boston_housing.csv").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == README_SHA256 == boston_housing.SHA256
    assert raw.decode().splitlines()[0].replace('"', "").split(",") == [*boston_housing.FEATURE_NAMES, "MEDV"]


def test_default_split_matches_readme_check_values():
    (x_train, y_train), (x_test, y_test) = boston_housing.load_data()
    assert x_train.shape == (404, 13) and y_train.shape == (404,)
    assert x_test.shape == (102, 13) and y_test.shape == (102,)
    assert x_train.dtype == y_train.dtype == x_test.dtype == y_test.dtype == np.float64
    assert y_train.mean() == Y_TRAIN_MEAN
    assert y_test.mean() == Y_TEST_MEAN
    np.testing.assert_array_equal(x_train[0], X_TRAIN_0)
    np.testing.assert_array_equal(y_train[:5], Y_TRAIN_5)


@pytest.fixture
def keras_loader_on_our_rows(tmp_path, monkeypatch):
    """keras.datasets.boston_housing.load_data, reading an .npz of the shipped rows instead of
    downloading: Keras's own split code is then the reference for ours."""
    import keras.src.datasets.boston_housing as keras_boston

    x, y = boston_housing.load_raw()
    path = tmp_path / "boston_housing.npz"
    np.savez(path, x=x, y=y)
    monkeypatch.setattr(keras_boston, "get_file", lambda *args, **kwargs: str(path))
    return keras_boston.load_data


@pytest.mark.parametrize("test_split, seed", [(0.2, 113), (0.0, 113), (0.5, 0), (0.33, 7), (0.999, 1)])
def test_split_is_identical_to_keras(keras_loader_on_our_rows, test_split, seed):
    ours = boston_housing.load_data(test_split=test_split, seed=seed)
    theirs = keras_loader_on_our_rows(test_split=test_split, seed=seed)
    for a, b in zip([*ours[0], *ours[1]], [*theirs[0], *theirs[1]]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_raw_rows_are_the_original_order():
    x, y = boston_housing.load_raw()
    assert x.shape == (506, 13) and y.shape == (506,)
    np.testing.assert_array_equal(x[0], [0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98])
    assert y[0] == 24.0 and y[-1] == 11.9


def test_options_float32_columns_tensors():
    (x_train, y_train), (x_test, y_test) = boston_housing.load_data(dtype="float32", targets_as_columns=True)
    (rx, ry), (sx, sy) = boston_housing.load_data()
    assert x_train.dtype == y_train.dtype == np.float32
    assert y_train.shape == (404, 1) and y_test.shape == (102, 1)
    np.testing.assert_array_equal(y_train[:, 0], ry.astype(np.float32))
    np.testing.assert_array_equal(x_test, sx.astype(np.float32))

    (tx, ty), (tsx, tsy) = boston_housing.load_data(dtype=np.float32, targets_as_columns=True, as_tensors=True)
    assert all(isinstance(t, tf.Tensor) for t in (tx, ty, tsx, tsy))
    assert ty.dtype == tf.float32 and tuple(ty.shape) == (404, 1)
    np.testing.assert_array_equal(tx.numpy(), x_train)


def test_returns_fresh_writeable_copies():
    (x_train, y_train), _ = boston_housing.load_data()
    x_train[:] = 0
    y_train[:] = 0
    (x_again, y_again), _ = boston_housing.load_data()
    assert y_again.mean() == Y_TRAIN_MEAN and x_again[0, 2] == 8.14


def test_module_docstring_keeps_the_b_column_note():
    assert "B column encodes a racial statistic" in boston_housing.__doc__


@pytest.mark.parametrize("test_split", [1, 1.0, -0.1, 2, "0.2", True, None])
def test_bad_test_split(test_split):
    with pytest.raises(ValueError, match="test_split"):
        boston_housing.load_data(test_split=test_split)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"seed": "1"}, "seed"), ({"seed": 1.5}, "seed"), ({"dtype": "int32"}, "dtype"), ({"dtype": "nonsense"}, "dtype")],
)
def test_bad_seed_or_dtype(kwargs, match):
    with pytest.raises(TypeError, match=match):
        boston_housing.load_data(**kwargs)


# --- Dataset --------------------------------------------------------------------------------
def _rows(n, width=3):
    """x whose row i is [i, i, ...] and y = i: every batch shows which rows it holds."""
    x = np.repeat(np.arange(n, dtype=np.float64)[:, None], width, axis=1)
    return x, np.arange(n)


@pytest.mark.parametrize("n", [0, 1, 7, 17, 1023])
@pytest.mark.parametrize("batch_size", [1, 7, 32])
@pytest.mark.parametrize("shuffle", [True, False])
def test_one_epoch_is_every_row_once(n, batch_size, shuffle):
    x, y = _rows(n)
    ds = Dataset((x, y), batch_size=batch_size, shuffle=shuffle, seed=3)
    batches = list(ds)
    assert len(batches) == len(ds) == -(-n // batch_size)
    assert [len(b[0]) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    seen = np.concatenate([b[1] for b in batches]) if batches else np.array([], dtype=int)
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(n))
    for bx, by in batches:  # rows stay paired
        np.testing.assert_array_equal(bx[:, 0], by)


@pytest.mark.parametrize("n, batch_size", [(0, 4), (3, 4), (17, 4), (16, 4), (1023, 32)])
def test_drop_remainder(n, batch_size):
    x, y = _rows(n)
    ds = Dataset((x, y), batch_size=batch_size, seed=0, drop_remainder=True)
    batches = list(ds)
    assert len(batches) == len(ds) == n // batch_size
    assert all(len(bx) == len(by) == batch_size for bx, by in batches)
    seen = np.concatenate([b[1] for b in batches]) if batches else np.array([], dtype=int)
    assert len(np.unique(seen)) == len(seen) == (n // batch_size) * batch_size


def test_reshuffles_every_epoch_reproducibly():
    x, y = _rows(100)
    first, again, other = (Dataset((x, y), batch_size=10, seed=s) for s in (5, 5, 6))
    epochs = [np.concatenate([b[1] for b in first]) for _ in range(3)]
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    for e in epochs:
        assert not np.array_equal(e, np.arange(100))
    for expected in epochs:
        np.testing.assert_array_equal(np.concatenate([b[1] for b in again]), expected)
    assert not np.array_equal(np.concatenate([b[1] for b in other]), epochs[0])


def test_tf_tensors_in_tf_tensors_out():
    x, y = _rows(17)
    ds = Dataset((tf.constant(x), tf.constant(y)), batch_size=5, seed=1)
    batches = list(ds)
    assert all(isinstance(t, tf.Tensor) for b in batches for t in b)
    seen = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(17))
    for bx, by in batches:
        np.testing.assert_array_equal(bx.numpy()[:, 0], by.numpy())


def test_single_array_and_lists_are_accepted():
    ds = Dataset(np.arange(10), batch_size=4, shuffle=False)
    assert [b[0].tolist() for b in ds] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    ds = Dataset(([1, 2, 3], [4, 5, 6]), batch_size=2, shuffle=False)
    assert [(a.tolist(), b.tolist()) for a, b in ds] == [([1, 2], [4, 5]), ([3], [6])]


def test_same_epoch_as_tf_data():
    x, y = _rows(23)
    for drop in (False, True):
        ours = Dataset((x, y), batch_size=5, seed=2, drop_remainder=drop)
        theirs = ours.to_tf_data()
        assert isinstance(theirs, tf.data.Dataset)
        epochs = [[(bx.numpy(), by.numpy()) for bx, by in theirs] for _ in range(2)]
        for batches in epochs:
            assert [len(b[1]) for b in batches] == [len(b[1]) for b in ours]
            seen = np.concatenate([b[1] for b in batches])
            assert len(np.unique(seen)) == len(seen) == (20 if drop else 23)
            for bx, by in batches:
                np.testing.assert_array_equal(bx[:, 0], by)
        order = [np.concatenate([b[1] for b in batches]) for batches in epochs]
        assert not np.array_equal(order[0], order[1])  # reshuffled each epoch
    unshuffled = Dataset((x, y), batch_size=5, shuffle=False).to_tf_data()
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in unshuffled]), np.arange(23))


def test_bad_arguments():
    x, y = _rows(10)
    with pytest.raises(ValueError, match=r"same length.*\[10, 9\]"):
        Dataset((x, y[:9]))
    with pytest.raises(ValueError, match="same length"):
        Dataset((tf.constant(x), y[:9]))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Dataset((x, y), batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        Dataset((x, y), batch_size=2.0)
    with pytest.raises(TypeError, match="batch_size"):
        Dataset((x, y), batch_size=True)
    with pytest.raises(TypeError, match="seed"):
        Dataset((x, y), seed="1")
    with pytest.raises(ValueError, match="scalar"):
        Dataset((x, np.float64(1.0)))
    with pytest.raises(TypeError, match="non-empty"):
        Dataset(())
