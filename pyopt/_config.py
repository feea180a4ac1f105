"""Build and runtime configuration: which ISA path runs, how many threads, which backend."""

from __future__ import annotations

import os
import platform


def core():
    """The compiled module ``pyopt._core``, or an ImportError that says how to fix the install."""
    try:
        from . import _core
    except ImportError as exc:
        raise ImportError(
            "pyopt's compiled core (pyopt._core) is missing or cannot be loaded "
            f"({exc}). Reinstall pyopt from source with a C++17 compiler: "
            "`pip install --force-reinstall --no-binary pyopt pyopt` or `pip install .` in a checkout."
        ) from exc
    return _core


def set_num_threads(n: int) -> None:
    """Set the number of threads of the NumPy kernels' pool (default: all cores, or $PYOPT_NUM_THREADS)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"num_threads must be an int, got {type(n).__name__}")
    core().set_num_threads(n)


def config() -> dict:
    """The configuration as a dict (see :func:`show_config`)."""
    from . import __version__

    info: dict = {
        "pyopt": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        **_cpu_details(),
    }
    try:
        lib = core()
        info.update(
            isa=lib.isa(),
            supported_isas=lib.supported_isas(),
            numpy_threads=lib.num_threads(),
            chunk_elements=lib.chunk_elements,
        )
    except ImportError as exc:  # pragma: no cover - broken install
        info["core_error"] = str(exc)
    try:
        from . import _loader

        info.update(_loader.describe())
    except ImportError:  # pragma: no cover - loader not present
        pass
    return info


def show_config() -> None:
    """Print the ISA path in use, thread counts and the TensorFlow backend status."""
    for key, value in config().items():
        print(f"{key:>18}: {value}")


def _first_processor(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The fields of the first processor in /proc/cpuinfo ({} where it cannot be read)."""
    fields: dict = {}
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_name() -> str:
    return _first_processor().get("model name") or platform.processor() or "unknown"


def _cpu_details(cpuinfo: str = "/proc/cpuinfo", cache_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> dict:
    """CPU family/model/stepping (``cpu_signature``) and the size of the last-level cache that
    cpu0 sees (``last_level_cache``: one core complex's L3 on a multi-CCD EPYC, not the
    chip's), where Linux tells them. Machines sold under one name ("AMD EPYC") differ in
    generation, bandwidth and caches, and benchmark ratios with them."""
    fields = _first_processor(cpuinfo)
    parts = [
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))
        if key in fields
    ]
    details = {"cpu_signature": ", ".join(parts)} if parts else {}
    levels = {}
    try:
        entries = sorted(e for e in os.listdir(cache_dir) if e.startswith("index"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            with open(os.path.join(cache_dir, entry, "level"), encoding="utf-8") as f:
                level = int(f.read())
            with open(os.path.join(cache_dir, entry, "size"), encoding="utf-8") as f:
                levels[level] = f.read().strip()
        except (OSError, ValueError):
            continue
    if levels:
        top = max(levels)
        details["last_level_cache"] = f"L{top} {levels[top]}"
    return details
