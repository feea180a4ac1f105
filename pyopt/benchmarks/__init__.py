"""pyopt's benchmark suites (pytest-benchmark) and the scripts that re-measure single cases.

Shipped with the package so that ``pyopt bench`` runs from an installed wheel; not part of
pyopt's test run. Nothing here is imported by ``import pyopt``, and this ``__init__`` imports
nothing (no pytest):

- ``plugin``: the suites' pytest plugin (``--quick``, ``--impl``, machine info, timing fixture),
  loaded by ``pytest.ini`` beside it;
- ``workloads``, ``implementations``: the cases and what runs them;
- ``test_update``, ``test_train``, ``test_probe``: the suites;
- ``paired`` (``python -m pyopt.benchmarks.paired``) and ``dispatch_gap``
  (``python -m pyopt.benchmarks.dispatch_gap``): single-case re-measurements.

The report is :mod:`pyopt.bench_report` (``pyopt bench``).
"""
