"""Optional dependencies: import one, or raise an ImportError that says what to install.

``pip install pyopt`` brings only what the NumPy kernels need. TensorFlow and Keras come from
the user's environment or from the ``tensorflow`` / ``tensorflow-cpu`` extras; the chapter's
and the benchmark report's libraries from the ``demo`` / ``bench`` extras.
"""

from __future__ import annotations

TENSORFLOW_HINT = "pip install 'pyopt[tensorflow-cpu]' (or 'pyopt[tensorflow]'), or install any TensorFlow 2.21 build"
# module -> how to get it
_HINTS = {
    "tensorflow": TENSORFLOW_HINT,
    "keras": TENSORFLOW_HINT,
    "pandas": "pip install 'pyopt[demo]'",
    "matplotlib": "pip install 'pyopt[demo]'",
    "tqdm": "pip install 'pyopt[demo]'",
    "tf_keras": "pip install 'pyopt[legacy]' (beside tensorflow-cpu: pip install --no-deps 'tf_keras>=2.21,<2.22')",
}


def missing(feature: str, cause: ImportError) -> ImportError:
    """The error for ``feature`` when one of its imports failed with ``cause``: what to install.

    Used around a module's imports of optional dependencies::

        try:
            import tensorflow as tf
        except ImportError as exc:
            raise missing("pyopt.ops", exc) from exc
    """
    module = (cause.name or "").partition(".")[0]
    hint = _HINTS.get(module)
    if hint is None:  # not an optional dependency: say so, with the original message
        return ImportError(f"{feature} failed to import {cause.name}: {cause}")
    return ImportError(f"{feature} needs {module}, which cannot be imported ({cause}). {hint}.")
