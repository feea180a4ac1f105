"""Lazy loading of pyopt's TensorFlow op library ``_pyopt_ops.so``.

The library is compiled against one TensorFlow (its C++ ABI changes between minor
releases), so it is loaded only on first use, never at ``import pyopt``, and only after
checking the running TensorFlow against the version recorded at build time in
``_pyopt_ops_build.json`` next to the library (major.minor must agree: TensorFlow keeps its
C++ ABI within patch releases, not across minor ones). Where it lives:

1. ``$PYOPT_OPS_LIBRARY`` if set (a path to the ``.so``; its build info is read from the
   ``_pyopt_ops_build.json`` in the same directory);
2. else next to the compiled ``pyopt._core`` module (in an editable install that is
   site-packages, not the source tree), then next to this file.

If anything goes wrong (no library, no build info, another TensorFlow version, a library
that does not load) :func:`load` warns once with a :class:`FusedOpsUnavailableWarning`
that says why and what to do, and returns None: callers then use the pure-TF ops.
``PYOPT_BACKEND=tf`` skips the library altogether (no load, no warning).

This module does not import TensorFlow until :func:`load` (or :func:`describe`) runs.
"""

from __future__ import annotations

import json
import os
import threading
import warnings

LIBRARY_NAME = "_pyopt_ops.so"
BUILD_INFO_NAME = "_pyopt_ops_build.json"
ENV_LIBRARY = "PYOPT_OPS_LIBRARY"
ENV_BACKEND = "PYOPT_BACKEND"
REINSTALL_HINT = (
    "Rebuild pyopt against the TensorFlow you run "
    "(pip install --no-build-isolation --force-reinstall pyopt, or from a checkout "
    "pip install --no-build-isolation -e .), or set PYOPT_BACKEND=tf to use the pure-TF ops "
    "without this warning."
)


class FusedOpsUnavailableWarning(UserWarning):
    """pyopt's fused TensorFlow ops could not be loaded; the pure-TF ops are used instead."""


_lock = threading.Lock()
_attempted = False
_module = None  # the loaded op module
_reason: str | None = None  # why it is not loaded
_path: str | None = None  # the library path tried
_built_with: str | None = None  # TF version from the build info
_warned = False


def forced_fallback() -> bool:
    """Whether ``PYOPT_BACKEND=tf`` (any case, spaces ignored) forces the pure-TF ops: the one
    reader of that variable."""
    return os.environ.get(ENV_BACKEND, "").strip().lower() == "tf"


def library_path() -> str:
    """Where the library is looked for: ``$PYOPT_OPS_LIBRARY``, else next to ``pyopt._core``."""
    override = os.environ.get(ENV_LIBRARY)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    candidates = []
    try:
        from . import _core

        candidates.append(os.path.dirname(os.path.abspath(_core.__file__)))
    except ImportError:
        pass
    candidates.append(os.path.dirname(os.path.abspath(__file__)))
    for directory in candidates:
        path = os.path.join(directory, LIBRARY_NAME)
        if os.path.exists(path):
            return path
    return os.path.join(candidates[0], LIBRARY_NAME)


def _read_build_info(path: str) -> dict:
    """The build info next to ``path``; raises OSError/ValueError with a readable message."""
    info_path = os.path.join(os.path.dirname(path), BUILD_INFO_NAME)
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    if not isinstance(info, dict) or not isinstance(info.get("tensorflow"), str):
        raise ValueError(f"{info_path} does not record the TensorFlow version")
    return info


def _major_minor(version: str) -> tuple:
    return tuple(version.split(".")[:2])


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def _try_load():
    """Load once (thread-safe); sets the module state. Returns the op module or None."""
    global _attempted, _module, _reason, _path, _built_with
    with _lock:
        if _attempted:
            return _module
        _attempted = True
        _path = library_path()
        try:
            _module = _load_checked(_path)
        except _Unavailable as exc:
            _reason = str(exc)
        return _module


class _Unavailable(Exception):
    pass


def _load_checked(path: str):
    global _built_with
    if not os.path.isfile(path):
        where = f"${ENV_LIBRARY}={path}" if os.environ.get(ENV_LIBRARY) else path
        raise _Unavailable(f"the op library was not found at {where} (was pyopt built without TensorFlow?)")
    try:
        info = _read_build_info(path)
    except (OSError, ValueError) as exc:
        raise _Unavailable(f"cannot read the build info of {path}: {exc}") from None
    _built_with = info["tensorflow"]
    try:
        running = _tf_version()
    except ImportError as exc:
        raise _Unavailable(f"TensorFlow cannot be imported ({exc})") from None
    if _major_minor(running) != _major_minor(_built_with):
        raise _Unavailable(f"the op library was built for TensorFlow {_built_with} but TensorFlow {running} is running")
    import tensorflow as tf

    try:
        module = tf.load_op_library(path)
    except Exception as exc:  # NotFoundError (undefined symbol, bad ELF), OSError, ...
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _Unavailable(f"loading {path} failed: {message}") from None
    missing = [name for name in op_functions() if not hasattr(module, name)]
    if missing:
        raise _Unavailable(f"{path} does not define the ops {', '.join(missing)} (stale build?)")
    return module


def op_functions() -> tuple:
    """The generated Python wrappers of every rule's ops (the rule table's)."""
    from ._rules import RULES

    return tuple(dict.fromkeys(name for rule in RULES.values() for name in rule.fused_ops))  # AdamW runs Adam's


def load():
    """The loaded op module, or None (fallback). Loads on first call; warns once on failure.

    Returns None without loading or warning when ``PYOPT_BACKEND=tf``.
    """
    global _warned
    if forced_fallback():
        return None
    module = _try_load()
    if module is None and not _warned:
        _warned = True
        warnings.warn(
            f"pyopt's fused TensorFlow ops are unavailable, using the pure-TF ops: {_reason}. {REINSTALL_HINT}",
            FusedOpsUnavailableWarning,
            stacklevel=2,
        )
    return module


def available() -> bool:
    """True if the fused ops can be used (loads the library on first call)."""
    return load() is not None


def unavailable_reason() -> str | None:
    """Why the fused ops are not used (None when they are). Loads the library on first call."""
    if forced_fallback():
        return f"{ENV_BACKEND}=tf forces the pure-TF ops"
    _try_load()
    return _reason


def describe() -> dict:
    """Status for ``pyopt.show_config()``. Imports TensorFlow and tries the load, without warning."""
    info: dict = {}
    if forced_fallback():
        info["tf_ops"] = f"disabled ({ENV_BACKEND}=tf)"
        info["tf_ops_path"] = library_path()
    else:
        module = _try_load()
        info["tf_ops"] = "loaded" if module is not None else f"unavailable: {_reason}"
        info["tf_ops_path"] = _path
    if _built_with is None:
        try:
            info["tf_built_with"] = _read_build_info(info["tf_ops_path"])["tensorflow"]
        except (OSError, ValueError):
            info["tf_built_with"] = None
    else:
        info["tf_built_with"] = _built_with
    try:
        import tensorflow as tf

        info["tf_running"] = tf.__version__
        threads = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_intra_op_threads"] = threads if threads else f"default ({os.cpu_count()} cores)"
    except ImportError as exc:
        info["tf_running"] = f"not importable: {exc}"
    return info


def _reset_for_tests() -> None:
    """Forget the load attempt and the warning (tests only; a loaded library stays loaded)."""
    global _attempted, _module, _reason, _path, _built_with, _warned
    with _lock:
        _attempted, _module, _reason, _path, _built_with, _warned = False, None, None, None, None, False
