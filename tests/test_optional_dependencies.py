"""Without TensorFlow (or the demo's libraries) pyopt's NumPy kernels work, and every front
end that needs what is missing raises an ImportError that says what to install.

Each case runs in a subprocess whose ``sys.modules`` marks the missing packages as
unimportable (``None``: ``import tensorflow`` then raises ModuleNotFoundError, as in an
environment without it), so nothing leaks into the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# argv[1]: the packages to hide; argv[2]: the statements to run, each reported as "ok" or
# the exception's type and message.
PROBE = textwrap.dedent(
    """
    import json, sys
    for name in json.loads(sys.argv[1]):
        sys.modules[name] = None
    out = {}
    for statement in json.loads(sys.argv[2]):
        try:
            exec(statement, {})
            out[statement] = "ok"
        except Exception as exc:
            out[statement] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(out))
    """
)

TF_HINT = "pip install 'pyopt[tensorflow-cpu]' (or 'pyopt[tensorflow]'), or install any TensorFlow 2.21 build."
DEMO_HINT = "pip install 'pyopt[demo]'."


def _probe(hidden, statements) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(hidden), json.dumps(statements)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("hidden", [["tensorflow"], ["keras"], ["tensorflow", "keras"]])
def test_tensorflow_front_ends_say_what_to_install(hidden):
    front_ends = ["pyopt.ops", "pyopt.optimizers", "pyopt.models", "pyopt.training", "pyopt.legacy"]
    out = _probe(hidden, [f"import {name}" for name in front_ends])
    for name in front_ends:
        message = out[f"import {name}"]
        if name in ("pyopt.ops", "pyopt.legacy") and hidden == ["keras"]:
            continue  # they import no Keras of their own (pyopt.legacy is tf_keras's)
        missing = "tensorflow" if name in ("pyopt.ops", "pyopt.legacy") else None
        assert message.startswith(f"ImportError: {name} needs "), (name, message)
        needed = message.split(" needs ", 1)[1].split(",", 1)[0]
        assert needed == (missing or needed) and needed in hidden, (name, message)
        assert message.endswith(TF_HINT), (name, message)


def test_numpy_kernels_and_info_work_without_tensorflow():
    statements = [
        # one Adam step against the float64 formula; at t=1 it reduces to
        # p -= lr*s*g/(s*|g| + eps) with s = sqrt(1 - beta_2)
        "import numpy as np, pyopt.kernels as k\n"
        "p = np.array([1.0, -2.0, 3.0]); g = np.array([0.5, -1.0, 2.0])\n"
        "m = np.zeros(3); v = np.zeros(3)\n"
        "k.adam(p, g, m, v, lr=0.1, step=1)\n"
        "s = np.sqrt(1 - 0.999)\n"
        "want = np.array([1.0, -2.0, 3.0]) - 0.1*s*g/(s*np.abs(g) + 1e-7)\n"
        "assert np.allclose(p, want, rtol=1e-12, atol=0), p",
        "import pyopt, sys\ninfo = pyopt.config()\n"
        "assert info['tf_ops'].startswith('unavailable: TensorFlow cannot be imported'), info['tf_ops']\n"
        "assert info['tf_running'].startswith('not importable'), info['tf_running']\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None",
        "from pyopt.cli import main\nassert main(['info']) == 0",
    ]
    out = _probe(["tensorflow", "keras"], statements)
    assert list(out.values()) == ["ok"] * len(statements), out


@pytest.mark.parametrize(
    ("hidden", "module"), [("pandas", "pyopt.training"), ("tqdm", "pyopt.training"), ("matplotlib", "pyopt.plots")]
)
def test_the_chapter_says_what_to_install(hidden, module):
    message = _probe([hidden], [f"import {module}"])[f"import {module}"]
    assert message.startswith(f"ImportError: {module} needs {hidden}, "), message
    assert message.endswith(DEMO_HINT), message


def test_pyopt_demo_without_pandas_exits_with_what_to_install(tmp_path):
    code = "import sys; sys.modules['pandas'] = None\nfrom pyopt.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", code, "demo", "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "pyopt demo: error: pyopt.training needs pandas, " in proc.stderr, proc.stderr[-2000:]
    assert DEMO_HINT in proc.stderr
    assert not any(tmp_path.iterdir())


def test_the_core_install_requires_only_numpy():
    """``pip install pyopt`` pulls no TensorFlow, Keras or chapter libraries (they are extras)."""
    import importlib.metadata

    requires = importlib.metadata.requires("pyopt") or []
    core = sorted(r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert core == ["ml_dtypes", "numpy"], requires
    extras = importlib.metadata.metadata("pyopt").get_all("Provides-Extra")
    assert {"tensorflow", "tensorflow-cpu", "demo", "bench", "legacy", "test"} <= set(extras), extras
    assert np.__version__  # numpy is what the kernels need
