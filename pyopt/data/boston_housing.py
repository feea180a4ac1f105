"""The Boston housing data, shipped with pyopt and loaded offline.

The Boston house-price data (Harrison and Rubinfeld, "Hedonic prices and the demand for
clean air", J. Environ. Economics & Management 5, 81-102, 1978; the StatLib / UCI copy):
506 rows, 13 features and the target MEDV (median home value, in $1000s), in the original
row order. It is the same data as ``keras.datasets.boston_housing``, which downloads it at
run time; :func:`load_data` returns exactly what that function returns, from the copy in
this package (``boston_housing.csv``, read with :mod:`importlib.resources`), without network.

Note for users: the B column encodes a racial statistic; the data set is kept because it
is the classic teaching benchmark the optimizer chapter uses, not as an endorsement.

Split (the Keras recipe): ``idx = np.arange(506)``; ``np.random.RandomState(seed).shuffle(idx)``;
the first ``int(506 * (1 - test_split))`` shuffled rows train, the rest test (404 / 102 by default).
"""

from __future__ import annotations

import hashlib
import numbers
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = ["load_data", "load_raw", "FEATURE_NAMES", "TARGET_NAME", "SHA256"]

FEATURE_NAMES = (
    "CRIM",
    "ZN",
    "INDUS",
    "CHAS",
    "NOX",
    "RM",
    "AGE",
    "DIS",
    "RAD",
    "TAX",
    "PTRATIO",
    "B",
    "LSTAT",
)
TARGET_NAME = "MEDV"
SHA256 = "fd6aae7c42ed5998b4157a6149aa35d47c60fc0664c5bcfea5f3df4f423376cc"
_FILE = "boston_housing.csv"


@lru_cache(maxsize=1)
def _read() -> tuple[np.ndarray, np.ndarray]:
    raw = resources.files(__package__).joinpath(_FILE).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"pyopt/data/{_FILE} is damaged: sha256 {digest}, expected {SHA256}; reinstall pyopt")
    lines = raw.decode("ascii").splitlines()
    header = tuple(name.strip('"') for name in lines[0].split(","))
    if header != (*FEATURE_NAMES, TARGET_NAME):  # pragma: no cover - guarded by the hash
        raise RuntimeError(f"unexpected columns in {_FILE}: {header}")
    table = np.loadtxt(lines[1:], delimiter=",", dtype=np.float64)
    table.setflags(write=False)
    return table[:, :-1], table[:, -1]


def load_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 506 rows in the original order: ``(x, y)``, float64, shapes (506, 13) and (506,)."""
    x, y = _read()
    return x.copy(), y.copy()


def load_data(
    test_split: float = 0.2,
    seed: int | None = 113,
    *,
    dtype=None,
    targets_as_columns: bool = False,
    as_tensors: bool = False,
):
    """Load the Boston housing data, split as ``keras.datasets.boston_housing.load_data``.

    Args:
        test_split: fraction of the rows held out for testing, ``0 <= test_split < 1``.
        seed: seed of the shuffle before the split (``np.random.RandomState(seed)``).
        dtype: dtype of the returned arrays; ``None`` keeps float64 (as Keras). The chapter
            uses ``"float32"``.
        targets_as_columns: return targets of shape ``(n, 1)`` (``y.reshape(-1, 1)``, as the
            chapter's MSE against a one-output model needs) instead of ``(n,)``.
        as_tensors: return ``tf.Tensor`` s instead of NumPy arrays.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``. With the defaults, identical (values, dtype
        and shapes) to ``keras.datasets.boston_housing.load_data()``.
    """
    if isinstance(test_split, bool) or not isinstance(test_split, numbers.Real) or not 0 <= test_split < 1:
        raise ValueError(f"test_split must be a number with 0 <= test_split < 1, got {test_split!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be a NumPy floating dtype, got {dtype!r}") from exc
        if dtype.kind != "f":
            raise TypeError(f"dtype must be a NumPy floating dtype, got {dtype}")
    x, y = _read()
    idx = np.arange(len(x))
    np.random.RandomState(seed).shuffle(idx)
    x, y = x[idx], y[idx]
    cut = int(len(x) * (1 - test_split))
    arrays = [x[:cut], y[:cut], x[cut:], y[cut:]]
    if targets_as_columns:
        arrays[1::2] = [a.reshape(-1, 1) for a in arrays[1::2]]
    arrays = [np.array(a, dtype=dtype) for a in arrays]  # fresh, writeable copies
    if as_tensors:
        import tensorflow as tf

        arrays = [tf.convert_to_tensor(a) for a in arrays]
    x_train, y_train, x_test, y_test = arrays
    return (x_train, y_train), (x_test, y_test)
