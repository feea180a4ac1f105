"""Resumes training from a CheckpointManager directory in a fresh process; started by the tests.

    python resume_checkpoint.py CKPT_DIR OPTIMIZER BACKEND OUT.npz

Builds the model and optimizer exactly as ``tests/test_integration_xla_saving.py`` does,
restores the latest checkpoint, trains the third epoch with ``model.fit`` and writes the
weights (``w<i>``), the optimizer variables (``opt<i>``) and the backend of the last step
(``last_backend``) to OUT.npz.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared definitions

import numpy as np
import tensorflow as tf
import test_integration_xla_saving as shared


def main(ckpt_dir: str, which: str, backend: str, out: str) -> None:
    model, optimizer = shared.small_model(seed=12), shared.OPTIMIZERS[which](backend)
    optimizer.build(model.trainable_variables)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer), ckpt_dir, max_to_keep=1)
    manager.checkpoint.restore(manager.latest_checkpoint).assert_consumed()
    weights = shared.fit(model, optimizer, epochs=3, initial_epoch=2)
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({f"opt{i}": v for i, v in enumerate(shared.optimizer_values(optimizer))})
    np.savez(out, last_backend=np.array(optimizer.last_backend), **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
