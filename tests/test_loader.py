"""pyopt._loader: lazy loading of the TF op library, the version check, one warning, fallback.

Every case that imports TensorFlow or loads a library runs in a Python subprocess, so no
state (a loaded library, the once-only warning) leaks into the other tests: one subprocess
for all the broken-library cases (the loader is reset between them), one for the working
library, started together by a module fixture. Broken libraries are made in a temporary directory: a missing
file, garbage bytes, a library with an undefined symbol, a build info that names another
TensorFlow version, no build info.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pyopt import _loader

# Runs the scenarios given as JSON in argv[1], in order, in this one process: each sets its
# environment, resets the loader, then loads three times and reports what happened.
PROBE = textwrap.dedent(
    """
    import json, os, sys, warnings
    from pyopt import _loader
    results = {}
    for name, env, flags in json.loads(sys.argv[1]):
        for key in ("PYOPT_BACKEND", "PYOPT_OPS_LIBRARY"):
            os.environ.pop(key, None)
        os.environ.update(env)
        _loader._reset_for_tests()
        out = results[name] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["loads"] = [_loader.load() is not None for _ in range(3)]
            out["available"] = _loader.available()
            out["reason"] = _loader.unavailable_reason()
            out["tf_imported"] = "tensorflow" in sys.modules
            if "fallback" in flags:
                import numpy as np, tensorflow as tf, pyopt.ops
                v = tf.Variable(np.ones(4, np.float32))
                out["backend"] = pyopt.ops.gradient_descent_multi([v], [tf.ones(4)], lr=0.5)
                out["value"] = v.numpy().tolist()
            if "describe" in flags:
                out["describe"] = _loader.describe()
        out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    print("RESULT " + json.dumps(results))
    """
)

# The installed TensorFlow's version, without importing it: whichever distribution
# (tensorflow, tensorflow-cpu, ...) provides the package.
TF_VERSION = importlib.metadata.version(importlib.metadata.packages_distributions()["tensorflow"][0])
BUILT = os.path.isfile(_loader.library_path())
UNDEFINED_SYMBOL_C = """
extern void pyopt_test_symbol_that_does_not_exist(void);
__attribute__((constructor)) static void init(void) { pyopt_test_symbol_that_does_not_exist(); }
"""


def _write_build_info(directory, version=TF_VERSION):
    with open(os.path.join(directory, _loader.BUILD_INFO_NAME), "w", encoding="utf-8") as f:
        json.dump({"tensorflow": version, "cxx11_abi": 1}, f)


def _library_dir(root, name, content=None, version=TF_VERSION):
    """A directory holding a _pyopt_ops.so (garbage bytes by default) and, unless version is None, build info."""
    directory = os.path.join(root, name)
    os.makedirs(directory)
    with open(os.path.join(directory, _loader.LIBRARY_NAME), "wb") as f:
        f.write(content if content is not None else os.urandom(4096))
    if version is not None:
        _write_build_info(directory, version)
    return os.path.join(directory, _loader.LIBRARY_NAME)


def _undefined_symbol_library(root):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = os.path.join(root, "undefined.c")
    with open(source, "w", encoding="utf-8") as f:
        f.write(UNDEFINED_SYMBOL_C)
    path = _library_dir(root, "undefined", content=b"")
    result = subprocess.run([compiler, "-shared", "-fPIC", "-o", path, source], capture_output=True)
    return path if result.returncode == 0 else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> what the scenario's load attempts did. The broken-library scenarios share one
    subprocess (none of them loads anything, and the loader is reset between them; the two
    that must not import TensorFlow come first); the working library gets its own."""
    root = str(tmp_path_factory.mktemp("loader"))
    broken = [
        ("forced fallback", dict(PYOPT_BACKEND="tf"), []),
        ("missing file", dict(PYOPT_OPS_LIBRARY=os.path.join(root, "nowhere", "_pyopt_ops.so")), ["fallback"]),
        ("garbage file", dict(PYOPT_OPS_LIBRARY=_library_dir(root, "garbage")), ["describe"]),
        ("version mismatch", dict(PYOPT_OPS_LIBRARY=_library_dir(root, "mismatch", version="2.0.0")), []),
        ("no build info", dict(PYOPT_OPS_LIBRARY=_library_dir(root, "noinfo", version=None)), []),
    ]
    undefined = _undefined_symbol_library(root)
    if undefined:
        broken.append(("undefined symbol", dict(PYOPT_OPS_LIBRARY=undefined), []))
    batches = [broken] + ([[("built library", {}, ["describe"])]] if BUILT else [])
    env = {k: v for k, v in os.environ.items() if k not in ("PYOPT_BACKEND", "PYOPT_OPS_LIBRARY")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, json.dumps(batch)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in batches
    ]
    results = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{stderr[-3000:]}"
        results.update(json.loads(lines[-1][len("RESULT ") :]))
    return results


def _pyopt_warnings(result):
    return [message for category, message in result["warnings"] if category == "FusedOpsUnavailableWarning"]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing file", r"the op library was not found at \$PYOPT_OPS_LIBRARY="),
        ("garbage file", r"loading .*garbage.*_pyopt_ops.so failed"),
        ("undefined symbol", r"undefined symbol: pyopt_test_symbol_that_does_not_exist"),
        ("version mismatch", rf"built for TensorFlow 2.0.0 but TensorFlow {TF_VERSION} is running"),
        ("no build info", r"cannot read the build info of .*noinfo"),
    ],
)
def test_failure_warns_once_and_falls_back(runs, name, reason):
    if name not in runs:
        pytest.skip(f"{name}: no C compiler to build the test library")
    result = runs[name]
    assert result["loads"] == [False, False, False] and result["available"] is False
    assert __import__("re").search(reason, result["reason"]), result["reason"]
    warned = _pyopt_warnings(result)
    assert len(warned) == 1, result["warnings"]
    assert result["reason"] in warned[0]
    assert "pip install --no-build-isolation --force-reinstall pyopt" in warned[0]
    assert "PYOPT_BACKEND=tf" in warned[0]


def test_missing_file_is_detected_without_importing_tensorflow(runs):
    assert runs["missing file"]["tf_imported"] is False


def test_pure_tf_fallback_runs_the_step(runs):
    result = runs["missing file"]
    assert result["backend"] == "tf"
    assert result["value"] == [0.5, 0.5, 0.5, 0.5]  # 1 - 0.5*1
    assert len(_pyopt_warnings(result)) == 1  # the fallback step did not warn again


def test_forced_fallback_neither_loads_nor_warns(runs):
    result = runs["forced fallback"]
    assert result["loads"] == [False, False, False] and result["available"] is False
    assert result["reason"] == "PYOPT_BACKEND=tf forces the pure-TF ops"
    assert result["tf_imported"] is False
    assert _pyopt_warnings(result) == []


def test_describe_reports_the_failure(runs):
    info = runs["garbage file"]["describe"]
    assert info["tf_ops"].startswith("unavailable: loading ")
    assert info["tf_ops_path"].endswith(os.path.join("garbage", "_pyopt_ops.so"))
    assert info["tf_built_with"] == TF_VERSION and info["tf_running"] == TF_VERSION


@pytest.mark.skipif(not BUILT, reason="the TF op library is not built (pyopt built without TensorFlow)")
def test_built_library_loads_without_warning(runs):
    result = runs["built library"]
    assert result["loads"] == [True, True, True] and result["available"] is True
    assert result["reason"] is None
    assert _pyopt_warnings(result) == []
    info = result["describe"]
    assert info["tf_ops"] == "loaded"
    assert info["tf_ops_path"] == _loader.library_path()
    assert info["tf_built_with"] == TF_VERSION == info["tf_running"]
    assert "tf_intra_op_threads" in info


def test_import_pyopt_loads_neither_tensorflow_nor_the_library():
    code = "import sys, pyopt, pyopt.kernels, pyopt._loader as l; print('tensorflow' in sys.modules, l._attempted)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- in-process, no loading


def test_library_path_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PYOPT_OPS_LIBRARY", str(tmp_path / "x.so"))
    assert _loader.library_path() == str(tmp_path / "x.so")
    monkeypatch.delenv("PYOPT_OPS_LIBRARY")
    from pyopt import _core

    assert os.path.dirname(_loader.library_path()) == os.path.dirname(os.path.abspath(_core.__file__))
    assert os.path.basename(_loader.library_path()) == "_pyopt_ops.so"


def test_forced_fallback_reason_in_process(monkeypatch):
    monkeypatch.setenv("PYOPT_BACKEND", "TF")
    assert _loader.load() is None
    assert _loader.unavailable_reason() == "PYOPT_BACKEND=tf forces the pure-TF ops"


def test_warning_category():
    assert issubclass(_loader.FusedOpsUnavailableWarning, UserWarning)


def test_version_check_is_on_major_minor():
    """Patch releases share the C++ ABI; minor releases do not."""
    assert _loader._major_minor("2.21.3") == _loader._major_minor("2.21.0")
    assert _loader._major_minor("2.22.0") != _loader._major_minor("2.21.0")
    assert _loader._major_minor("2.21.0rc1") != _loader._major_minor("2.20.1")


# --------------------------------------------------------------------------- no compiled core

# pyopt._core blocked (None in sys.modules: `import pyopt._core` raises ImportError, as for a
# missing or unloadable extension); argv[1] is the op library to point at, or "" for none.
NO_CORE = textwrap.dedent(
    """
    import json, os, sys, warnings
    sys.modules["pyopt._core"] = None
    import numpy as np
    import pyopt
    from pyopt import _loader
    out = {}
    for attempt in range(2):
        try:
            pyopt.kernels
            out.setdefault("kernels", []).append("imported")
        except ImportError as exc:
            out.setdefault("kernels", []).append(str(exc))
    import tensorflow as tf, keras
    import pyopt.ops, pyopt.optimizers
    os.environ["PYOPT_OPS_LIBRARY"] = sys.argv[1] or os.path.join(sys.argv[2], "nowhere", "_pyopt_ops.so")

    def adam(backend):
        v, m, s = (tf.Variable(np.array(x, np.float64))
                   for x in ([1.0, -2.0, 3.0], [0.1, 0.0, -0.2], [0.01, 0.0, 0.04]))
        used = pyopt.ops.adam_multi([v], [tf.constant([0.5, -1.0, 2.0], tf.float64)], [m], [s], lr=0.1, beta_1=0.9,
                                    beta_2=0.999, epsilon=1e-7, step=3, backend=backend)
        return [used, v.numpy().tolist(), m.numpy().tolist(), s.numpy().tolist()]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["tf"] = adam("tf")
        out["auto"] = [adam("auto") for _ in range(2)]
        opt = pyopt.optimizers.Adam(learning_rate=0.1)
        var = keras.Variable(np.ones(3, np.float32))
        opt.apply_gradients([(tf.ones(3), var)])
        out["keras"] = [opt.last_backend, var.numpy().tolist()]
    out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    out["core_imported"] = sys.modules.get("pyopt._core") is not None
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.parametrize("library", ["none", "built"])
def test_without_the_compiled_core_the_tf_api_still_works(library, tmp_path):
    """pyopt.kernels needs pyopt._core (one clear ImportError saying how to fix the install);
    pyopt.ops and pyopt.optimizers do not: backend="tf" gives the reference values, "auto"
    falls back with the loader's one warning, or uses the fused ops when their library loads
    (it does not need the core)."""
    if library == "built" and not BUILT:
        pytest.skip("the TF op library is not built (pyopt built without TensorFlow)")
    import reference as ref  # tests/ is on sys.path (rootdir conftest)

    env = {k: v for k, v in os.environ.items() if k not in ("PYOPT_BACKEND", "PYOPT_OPS_LIBRARY")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    path = _loader.library_path() if library == "built" else ""
    proc = subprocess.run(
        [sys.executable, "-c", NO_CORE, path, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT ") :])

    assert out["core_imported"] is False
    assert len(out["kernels"]) == 2 and out["kernels"][0] == out["kernels"][1], out["kernels"]
    message = out["kernels"][0]
    assert message.startswith("pyopt's compiled core (pyopt._core) is missing or cannot be loaded"), message
    assert "Reinstall pyopt from source with a C++17 compiler" in message and "pip install ." in message

    expected = ref.adam(
        [1.0, -2.0, 3.0],
        [0.5, -1.0, 2.0],
        [0.1, 0.0, -0.2],
        [0.01, 0.0, 0.04],
        lr=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        step=3,
    )
    fused = library == "built"
    for used, *arrays in [out["tf"], *out["auto"]]:
        assert used in ("tf", "fused")
        for got, want in zip(arrays, expected):
            np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    assert out["tf"][0] == "tf"
    assert [used for used, *_ in out["auto"]] == (["fused", "fused"] if fused else ["tf", "tf"])
    warned = _pyopt_warnings(out)
    if fused:
        assert warned == [], out["warnings"]
    else:
        assert len(warned) == 1 and "the op library was not found at $PYOPT_OPS_LIBRARY=" in warned[0], warned
    last_backend, value = out["keras"]
    assert last_backend == ("fused" if fused else "tf")
    np.testing.assert_allclose(value, [0.9, 0.9, 0.9], rtol=1e-6)  # Adam's first step: p - lr*sign(g)
