"""pytest configuration shared by every test module.

Hypothesis draws new random examples on every run, which is what a developer wants; CI
(``CI`` set in the environment, as .ci/run does) runs the "ci" profile instead: the same
examples on every run, so a CI result is reproducible, and a failure prints the blob to
replay it with ``@reproduce_failure``.
"""

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def bench_script():
    """load(filename) -> a script of bench/ as a module (bench/ is not an installed package)."""
    bench = Path(__file__).resolve().parent.parent / "bench"

    def load(filename: str):
        spec = importlib.util.spec_from_file_location(f"bench_{Path(filename).stem}", bench / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
