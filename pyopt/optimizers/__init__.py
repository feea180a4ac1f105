"""Keras 3 optimizers on pyopt's fused ops: drop-ins for the ``keras.optimizers`` of the same names.

Each class is the Keras built-in with its update replaced by ONE ``pyopt.ops.*_multi`` call
per step (clipnorm / global_clipnorm and weight decay fused in), on the fused custom ops or
pure TF (``backend="auto" | "fused" | "tf"``, see :class:`PyoptOptimizer`)::

    model.compile(optimizer=pyopt.optimizers.Adam(1e-3, weight_decay=1e-4), loss="mse")

``GradientDescent`` and ``Momentum`` are the chapter's names (``SGD`` without / with
momentum). Every class takes ``lr`` as an alias of ``learning_rate`` and is registered for
Keras serialization as ``"pyopt>ClassName"``.
"""

from .._deps import missing

try:
    import keras  # noqa: F401  (imported first only to say what to install when it is missing)
    import tensorflow  # noqa: F401  (likewise)
except ImportError as exc:
    raise missing("pyopt.optimizers", exc) from exc

from ._adagrad import Adagrad
from ._adam import Adam, AdamW
from ._adamax import Adamax
from ._base import PyoptOptimizer
from ._lion import Lion
from ._nadam import Nadam
from ._rmsprop import RMSprop
from ._sgd import SGD, GradientDescent, Momentum

__all__ = [
    "Adagrad",
    "Adam",
    "Adamax",
    "AdamW",
    "GradientDescent",
    "Lion",
    "Momentum",
    "Nadam",
    "PyoptOptimizer",
    "RMSprop",
    "SGD",
]
