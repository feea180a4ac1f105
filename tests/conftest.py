"""pytest configuration shared by every test module.

Hypothesis draws new random examples on every run, which is what a developer wants; CI
(``CI`` set in the environment, as .ci/run does) runs the "ci" profile instead: the same
examples on every run, so a CI result is reproducible, and a failure prints the blob to
replay it with ``@reproduce_failure``.
"""

import os

import pytest
from backends import fused_unavailable_reason
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(params=["fused", "tf"])
def backend(request):
    """Runs a test on each backend; "fused" is skipped (with the reason) where it cannot run."""
    if request.param == "fused":
        reason = fused_unavailable_reason()
        if reason:
            pytest.skip(reason)
    return request.param
