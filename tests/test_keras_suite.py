"""Keras's own optimizer tests, run against pyopt's classes.

At collection the installed Keras's ``keras/src/optimizers/<name>_test.py`` (adam, sgd,
adamw, rmsprop, adagrad, adamax, nadam, lion, optimizer) are read, their class under test
swapped for pyopt's by rewriting one import line, and compiled under Keras's file name (the
line numbers are kept, so a traceback points at Keras's line). Their ``TestCase`` classes
land in this module, so pytest runs every Keras test as its own item, e.g.
``test_keras_suite.py::AdamTest::test_clip_norm``.

Rewrites (the import lines must be found once each, else ``test_suite_loaded`` fails; a
file missing from the installed Keras fails it too):
- ``from keras.src.optimizers.adam import Adam`` -> pyopt's ``Adam`` (likewise ``SGD``, ``AdamW``,
  ``RMSprop``, ``Adagrad``, ``Adamax``, ``Nadam`` and ``Lion`` in their files);
  in ``optimizer_test.py`` the ``optimizers`` module becomes a namespace whose ``Adam`` and
  ``SGD`` are pyopt's (``optimizers.get("adam")`` and the other classes stay Keras's).
- ``@pytest.mark.requires_trainable_backend``, wherever it appears: a marker of Keras's
  repository conftest (unknown here, and ``--strict-markers`` is on), which skips such tests
  on the non-trainable "numpy" backend, becomes that ``skipif``.
"""

from __future__ import annotations

import types
from pathlib import Path

import keras.src.optimizers
import pytest

import pyopt.optimizers as po

KERAS_TESTS = Path(keras.src.optimizers.__file__).parent
TRAINABLE_MARK = "@pytest.mark.requires_trainable_backend"
TRAINABLE_SKIPIF = '@pytest.mark.skipif(backend.backend() == "numpy", reason="requires a trainable backend")'
PYOPT_CLASSES = {"adam": po.Adam, "sgd": po.SGD}


def get_with_pyopt(identifier):
    """``keras.optimizers.get``, where "adam" and "sgd" (as names or in configs) give pyopt's classes."""
    config = {"class_name": identifier, "config": {}} if isinstance(identifier, str) else identifier
    if isinstance(config, dict) and config["class_name"].lower() in PYOPT_CLASSES:
        return PYOPT_CLASSES[config["class_name"].lower()].from_config(dict(config["config"]))
    return keras.src.optimizers.get(identifier)


# keras.src.optimizers with pyopt's Adam and SGD, for optimizer_test.py
OPTIMIZERS_WITH_PYOPT = types.SimpleNamespace(
    **{**vars(keras.src.optimizers), "Adam": po.Adam, "SGD": po.SGD, "get": get_with_pyopt}
)

# file -> (its TestCase class, the names that must be pyopt's classes, {line of Keras's source:
# the line that replaces it, exactly once})
SUITES = {
    "adam_test.py": (
        "AdamTest",
        ["Adam"],
        {"from keras.src.optimizers.adam import Adam": "from pyopt.optimizers import Adam"},
    ),
    "sgd_test.py": (
        "SGDTest",
        ["SGD"],
        {"from keras.src.optimizers.sgd import SGD": "from pyopt.optimizers import SGD"},
    ),
    **{
        f"{module}_test.py": (
            f"{name}Test",
            [name],
            {f"from keras.src.optimizers.{module} import {name}": f"from pyopt.optimizers import {name}"},
        )
        for module, name in [
            ("adamw", "AdamW"),
            ("rmsprop", "RMSprop"),
            ("adagrad", "Adagrad"),
            ("adamax", "Adamax"),
            ("nadam", "Nadam"),
            ("lion", "Lion"),
        ]
    },
    "optimizer_test.py": (
        "OptimizerTest",
        ["optimizers.Adam", "optimizers.SGD"],
        {"from keras.src import optimizers": "optimizers = OPTIMIZERS_WITH_PYOPT"},
    ),
}


def load_suite(file_name: str):
    """The module built from Keras's ``file_name`` with pyopt's classes swapped in."""
    path = KERAS_TESTS / file_name
    source = path.read_text()  # FileNotFoundError when this Keras does not ship its tests
    for old, new in SUITES[file_name][2].items():
        lines = source.split("\n")
        if lines.count(old) != 1:
            raise LookupError(f"{path}: expected the line {old!r} once, found it {lines.count(old)} times")
        source = "\n".join(new if line == old else line for line in lines)
    source = source.replace(TRAINABLE_MARK, TRAINABLE_SKIPIF)
    module = types.ModuleType(f"keras_suite_{path.stem}")
    module.__file__ = str(path)
    module.OPTIMIZERS_WITH_PYOPT = OPTIMIZERS_WITH_PYOPT
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


MODULES: dict = {}
LOAD_ERRORS: dict = {}
for _file_name, (_class_name, *_) in SUITES.items():
    try:
        MODULES[_file_name] = load_suite(_file_name)
        globals()[_class_name] = getattr(MODULES[_file_name], _class_name)
    except (OSError, LookupError, AttributeError) as exc:  # a failure of test_suite_loaded, not a collection error
        LOAD_ERRORS[_file_name] = exc


@pytest.mark.parametrize("file_name", SUITES)
def test_suite_loaded(file_name):
    if file_name in LOAD_ERRORS:
        pytest.fail(f"Keras's {file_name} could not be run against pyopt: {LOAD_ERRORS[file_name]!r}")
    class_name, swapped, _ = SUITES[file_name]
    module = MODULES[file_name]
    for dotted in swapped:
        obj = module
        for part in dotted.split("."):
            obj = getattr(obj, part)
        assert obj is getattr(po, part), f"{file_name}: {dotted} is {obj}, not pyopt's"
    assert globals()[class_name] is getattr(module, class_name)
    assert [name for name in dir(globals()[class_name]) if name.startswith("test_")]
