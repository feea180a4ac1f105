"""Whether the fused backend can run in this test process (shared by the test modules)."""

from __future__ import annotations

import importlib
import os


def fused_unavailable_reason():
    """Why the fused backend cannot run in this process, or None."""
    if os.environ.get("PYOPT_BACKEND", "").lower() == "tf":
        return "PYOPT_BACKEND=tf forces the pure-TF backend"
    try:
        importlib.import_module("pyopt.ops._fused")
        from pyopt import _loader
    except ImportError as exc:
        return f"fused backend not importable: {exc}"
    if not _loader.available():
        return "pyopt's TF op library is not available (pyopt._loader.available() is False)"
    return None
