"""Data for the optimizer chapter: the Boston housing set (offline) and a minibatch iterator.

- ``pyopt.data.boston_housing.load_data()``: the Keras split of the Boston housing data,
  from the copy shipped in this package (see that module for a note on the B column).
- ``pyopt.data.Dataset``: minibatches over aligned arrays, reshuffled every epoch.
"""

from . import boston_housing
from .dataset import Dataset

__all__ = ["boston_housing", "Dataset"]
