"""What pyopt.ops updates: resource ``tf.Variable`` objects, or Keras 3 variables wrapping one."""

from __future__ import annotations

import tensorflow as tf


def tf_variable(x):
    """The ``tf.Variable`` behind ``x``: ``x`` itself, or the one a Keras 3 variable wraps
    (``keras.Variable._value``, without Keras's autocast); None when ``x`` is no variable."""
    if isinstance(x, tf.Variable):
        return x
    inner = getattr(x, "_value", None)
    return inner if isinstance(inner, tf.Variable) else None
