"""pyopt: fused, compiled optimizer kernels for NumPy, TensorFlow and Keras 3.

- ``pyopt.kernels``: in-place update rules on NumPy arrays (C++ core via pybind11).
- ``pyopt.ops``: the same rules on TensorFlow variables (custom ops, or pure-TF fallback).
- ``pyopt.optimizers``: Keras 3 optimizers on top (drop-in for ``keras.optimizers``).
- ``pyopt.data``, ``pyopt.models``, ``pyopt.training``: the optimizer chapter as a product.

TensorFlow is imported lazily: ``import pyopt`` and ``pyopt.kernels`` do not load it.
"""

from importlib import import_module as _import_module

from ._config import config, set_num_threads, show_config
from ._loader import FusedOpsUnavailableWarning

__version__ = "0.1.0"

_LAZY = {"kernels", "ops", "optimizers", "data", "models", "training", "legacy"}


def __getattr__(name):
    if name in _LAZY:
        return _import_module(f"pyopt.{name}")
    raise AttributeError(f"module 'pyopt' has no attribute {name!r}")


__all__ = [
    "__version__",
    "FusedOpsUnavailableWarning",
    "config",
    "show_config",
    "set_num_threads",
    *sorted(_LAZY - {"legacy"}),
]
