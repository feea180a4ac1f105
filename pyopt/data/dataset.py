"""Minibatches over in-memory arrays: the chapter's batch iterator, done right."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["Dataset"]


def _is_tf_tensor(value) -> bool:
    # Avoid importing TensorFlow for NumPy-only use: a tf.Tensor's class lives in tensorflow.*.
    return type(value).__module__.startswith("tensorflow")


class Dataset:
    """Iterate over aligned arrays in minibatches, one epoch per ``iter()``.

    ``Dataset((x, y), batch_size=32)`` yields tuples ``(x_batch, y_batch)`` covering every
    row once per epoch. With ``shuffle=True`` (the default) each epoch draws a fresh
    permutation from a generator seeded once with ``seed``: epoch ``k`` of two datasets with
    the same seed is the same, epochs differ from each other. ``drop_remainder=True`` drops
    the last, smaller batch. ``len()`` is the number of batches per epoch.

    Args:
        tensors: a tuple/list of NumPy arrays or ``tf.Tensor`` s with equal first dimension
            (a single array is taken as a 1-tuple). Batches have the input's type.
        batch_size: rows per batch, an int >= 1.
        shuffle: reshuffle the rows every epoch.
        seed: seed of the shuffling (``np.random.default_rng(seed)``); ``None`` is random.
        drop_remainder: drop the last batch when it has fewer than ``batch_size`` rows.
    """

    def __init__(
        self,
        tensors: Sequence,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        drop_remainder: bool = False,
    ):
        if isinstance(tensors, np.ndarray) or _is_tf_tensor(tensors):
            tensors = (tensors,)
        if not isinstance(tensors, (tuple, list)) or not tensors:
            raise TypeError("tensors must be a non-empty tuple or list of arrays or tensors")
        tensors = tuple(t if _is_tf_tensor(t) else np.asarray(t) for t in tensors)
        lengths = []
        for i, t in enumerate(tensors):
            if len(t.shape) == 0:
                raise ValueError(f"tensors[{i}] is a scalar; every tensor needs a first (batch) dimension")
            lengths.append(int(t.shape[0]))
        if len(set(lengths)) > 1:
            raise ValueError(f"tensors must have the same length (first dimension), got lengths {lengths}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.tensors = tensors
        self.num_examples = lengths[0]
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_remainder = bool(drop_remainder)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def __iter__(self) -> Iterator[tuple]:
        tensors = self.tensors
        if self.shuffle:
            order = self._rng.permutation(self.num_examples)
            tensors = tuple(_take(t, order) for t in tensors)
        for b in range(len(self)):
            lo = b * self.batch_size
            yield tuple(t[lo : lo + self.batch_size] for t in tensors)

    def __repr__(self) -> str:
        return (
            f"Dataset(num_examples={self.num_examples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_remainder={self.drop_remainder})"
        )

    def to_tf_data(self):
        """The equivalent ``tf.data.Dataset``: same batch sizes and batches per epoch, rows
        reshuffled every epoch (``reshuffle_each_iteration=True``) from ``seed``. The order
        of rows is TensorFlow's, not the one this class draws."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(self.tensors)
        if self.shuffle:
            ds = ds.shuffle(max(self.num_examples, 1), seed=self.seed, reshuffle_each_iteration=True)
        return ds.batch(self.batch_size, drop_remainder=self.drop_remainder)


def _take(tensor, order: np.ndarray):
    if _is_tf_tensor(tensor):
        import tensorflow as tf

        return tf.gather(tensor, order)
    return tensor[order]
