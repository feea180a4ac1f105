"""pyopt.benchmarks.workloads and implementations for issue #20's rules: the bytes per element,
the hyperparameters, the float64 reference checked against the Keras built-ins, the Embedding's
row-sparse data, Lion's sign ties, the reference forms told apart, the cases the suites run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyopt import bench_report
from pyopt.benchmarks import implementations as impls
from pyopt.benchmarks import workloads as w


def test_bytes_per_element_of_every_rule():
    # p, g read and p written, each slot read and written (the brief's counts per rule)
    assert w.BYTES_PER_F32_ELEMENT == {
        "gd": 12,
        "momentum": 20,
        "adam": 28,
        "adagrad": 20,
        "rmsprop": 20,
        "rmsprop_cm": 36,
        "adamax": 28,
        "nadam": 28,
        "lion": 20,
        "adamw": 28,
    }
    assert [s.name for s in w.slots_used("rmsprop_cm")] == ["velocity", "momentum_buffer", "average_gradient"]
    assert [s.name for s in w.slots_used("adam")] == ["m", "v"]  # no vhat: not amsgrad


def test_hyperparameters_are_keras_defaults_with_the_benchmarks_lr():
    assert w.hyper("rmsprop", 1) == dict(lr=0.01, rho=0.9, momentum=0.0, epsilon=1e-7)
    assert w.hyper("rmsprop_cm", 1) == dict(lr=0.01, rho=0.9, momentum=0.9, epsilon=1e-7)
    assert w.hyper("lion", 1) == dict(lr=0.01, beta_1=0.9, beta_2=0.99)
    assert w.hyper("adamax", 4)["step"] == 4
    u = [0.9 * (1 - 0.5 * 0.96**t) for t in (1, 2, 3)]
    assert w.hyper("nadam", 3)["u_product"] == pytest.approx(u[0] * u[1] * u[2], rel=1e-15)
    assert w.hyper("nadam", 3, u_product=0.5)["u_product"] == 0.5


def test_nadam_u_product_is_keras_running_product():
    keras = pytest.importorskip("keras")
    variable = keras.Variable(np.ones(3, np.float32))
    opt = keras.optimizers.Nadam(0.01)
    opt.build([variable])
    for _ in range(3):
        opt.apply_gradients([(np.ones(3, np.float32), variable)])
    assert float(opt._u_product) == pytest.approx(w.nadam_u_product(3), rel=1e-6)


TINY = w.many(2, 64, steps_per_call=3)  # three steps per call: the slots' recurrences matter


@pytest.mark.parametrize("rule", w.RULES)
def test_reference_matches_keras_builtin_over_three_steps(rule):
    pytest.importorskip("keras")
    data = w.WorkloadData(TINY)
    runner = impls.IMPLEMENTATIONS["keras"].build(rule, None, data, steps_per_call=3)
    runner.step()
    assert w.check_runner(data, rule, None, "keras", runner, steps=3) < 1e-4


@pytest.mark.parametrize("rule", w.NEW_RULES)
def test_pyopt_numpy_runner_takes_the_reference_steps(rule):
    data = w.WorkloadData(TINY)
    runner = impls.IMPLEMENTATIONS["pyopt_numpy"].build(rule, None, data, steps_per_call=3)
    runner.step()
    assert w.check_runner(data, rule, None, "pyopt_numpy", runner, steps=3) < 1e-4
    # one more step than the reference: caught
    runner.step()
    with pytest.raises(AssertionError, match="differs from the reference"):
        w.check_runner(data, rule, None, "pyopt_numpy", runner, steps=3)


def test_reference_forms_of_adagrad():
    # p = 1, g = 2, acc from 0.1: Keras sqrt(acc + eps), TF's V2 and torch sqrt(acc) + eps
    acc, eps = 0.1 + 4.0, 1e-7
    for form, denominator in (("keras", math.sqrt(acc + eps)), ("tf", math.sqrt(acc) + eps)):
        state = {"ties": 0}
        assert w.reference_step("adagrad", 1.0, 2.0, state, 1, form) == pytest.approx(1 - 0.01 * 2 / denominator, 1e-15)
        assert state["accumulator"] == pytest.approx(acc)
    # Keras on IndexedSlices: the repeats' squares (2 = 1 + 1 from two repeats of 1) instead of (1 + 1)^2
    state = {"ties": 0}
    p = w.reference_step("adagrad", 1.0, 2.0, state, 1, "keras_sparse", g2=2.0)
    assert p == pytest.approx(1 - 0.01 * 2 / math.sqrt(0.1 + 2.0 + eps), 1e-15)


def test_lion_counts_sign_ties():
    state = {"m": 1.0, "ties": 0}
    w.reference_step("lion", 0.0, -9.0, state, 1)  # 0.9*1 + 0.1*(-9): zero up to rounding
    assert state["ties"] == 1
    state = {"m": 1.0, "ties": 0}
    assert w.reference_step("lion", 0.0, -8.0, state, 1) == pytest.approx(-0.01)  # 0.9 - 0.8 > 0
    assert state["ties"] == 0 and state["m"] == pytest.approx(0.99 - 0.08)


def test_a_sign_tie_allows_the_other_sign_there_only(monkeypatch):
    data = w.WorkloadData(w.dense(1024))
    after = data.expected_first_step("lion", None)
    ties = np.zeros(len(after), dtype=int)
    ties[2] = 1
    monkeypatch.setattr(data, "sign_ties", lambda *args: ties)
    flipped = after.copy()
    flipped[2] += 2 * w.LR  # the other sign at the tie
    assert w.check_first_step(data, "lion", None, flipped) > 0
    flipped = after.copy()
    flipped[1] += 2 * w.LR  # the same at a position without a tie
    with pytest.raises(AssertionError, match="differs from the reference"):
        w.check_first_step(data, "lion", None, flipped)
    assert w.check_first_step(data, "lion", None, after) == 0


def test_benchmark_gradients_have_no_lion_ties():
    # Fixed gradients from zero m: b1*m + (1-b1)*g is a positive multiple of g at every step.
    data = w.WorkloadData(TINY)
    assert not np.any(data.sign_ties("lion", None, steps=5))


SMALL_EMBEDDING = w.embedding(2000, 8, 256)


def test_embedding_ids_repeat_and_positions_cover_rows_present_and_absent():
    data = w.WorkloadData(SMALL_EMBEDDING)
    ids = data.indices[0]
    assert ids.dtype == np.int64 and ids.shape == (256,) and 0 <= ids.min() and ids.max() < 2000
    rows, counts = np.unique(ids, return_counts=True)
    assert len(rows) < 256 and counts.max() > 10  # Zipf: a few ids repeat often
    assert np.array_equal(ids, w.WorkloadData(SMALL_EMBEDDING).indices[0])  # seeded
    dense = np.zeros((2000, 8), np.float64)
    np.add.at(dense, ids, data.values[0].astype(np.float64))
    picked = sorted({i // 8 for _, i in data.positions()})
    assert len(picked) == 3
    count = dict(zip(rows.tolist(), counts.tolist()))
    assert sorted(count.get(r, 0) for r in picked) == [0, 1, counts.max()]
    for t, i in data.positions():
        g, g2 = data.grad_at(t, i)
        assert g == pytest.approx(dense.reshape(-1)[i], abs=1e-12)
        repeats = data.values[0][ids == i // 8, i % 8].astype(np.float64)
        assert g2 == pytest.approx(float(np.sum(repeats**2)))


@pytest.mark.parametrize("rule", w.EMBEDDING_RULES)
def test_the_check_tells_the_sparse_forms_apart(rule):
    data = w.WorkloadData(SMALL_EMBEDDING)
    for name in ("pyopt_numpy", "pyopt_numpy_lazy"):  # repeats summed first, then squared
        runner = impls.IMPLEMENTATIONS[name].build(rule, None, data)
        runner.step()
        assert w.check_first_step(data, rule, None, runner.sample(data.positions())) < 1e-5
        with pytest.raises(AssertionError, match="differs"):
            w.check_first_step(data, rule, None, runner.sample(data.positions()), form="keras_sparse")
    pytest.importorskip("keras")
    runner = impls.IMPLEMENTATIONS["keras"].build(rule, None, data)  # each repeat squared, then summed
    runner.step()
    assert runner.form == "keras_sparse"
    assert w.check_runner(data, rule, None, "keras", runner) < 1e-5
    with pytest.raises(AssertionError, match="differs"):
        w.check_first_step(data, rule, None, runner.sample(data.positions()), form="keras")


def test_cases_of_the_new_rules():
    quick = w.update_cases(quick=True)
    assert {r for wl, r, c in quick if wl.name == "dense_16M" and c is None} == set(w.RULES)
    full = w.update_cases(quick=False)
    for rule in w.NEW_RULES:
        assert {wl.name for wl, r, _ in full if r == rule and not wl.sparse} == {"dense_16M", "many_200x10K"}
    assert [r for wl, r, _ in full if wl.sparse] == list(w.EMBEDDING_RULES)
    assert {r for wl, r, _ in full if wl.kind in ("dtype", "mlp")} == set(w.FIRST_RULES)
    assert set(w.RULES) <= set(bench_report.RULE_NAMES) and set(bench_report.NEW_RULES) == set(w.NEW_RULES)
    assert bench_report.TF_OPS == impls.TF_RAW_OPS
    assert w.case_impls(w.dense(1 << 24), "lion", None, quick=True) == w.QUICK_NEW_RULE_IMPLS
    assert w.case_impls(w.EMBEDDING, "adam", None) == w.EMBEDDING_IMPLS
    assert not set(w.LAZY_IMPLS) & set(w.case_impls(w.dense(1 << 24), "adam", None))
    assert w.EMBEDDING.shapes == ((1 << 20, 64),) and w.EMBEDDING.ids == 4096  # 1M rows, 4096 ids a step


@pytest.mark.parametrize(
    "name, rule, workload, match",
    [
        ("tf_raw", "nadam", w.dense(1024), "no fused training op for nadam"),
        ("tf_raw", "adam", SMALL_EMBEDDING, "nothing for row-sparse gradients of adam"),
        ("chapter", "adagrad", w.dense(1024), "chapter writes classes for gd, momentum, adam only"),
        ("pyopt_op_lazy", "adam", w.dense(1024), "lazy concerns row-sparse gradients only"),
        ("pyopt_numpy_lazy", "adagrad", w.dense(1024), "lazy concerns row-sparse gradients only"),
        ("numpy", "lion", w.dense(1024), "NumPy expressions are written for dense"),
    ],
)
def test_what_cannot_run_says_why(name, rule, workload, match):
    if impls.IMPLEMENTATIONS[name].kind == "tf":
        pytest.importorskip("tensorflow")
    with pytest.raises(impls.Unavailable, match=match):
        impls.IMPLEMENTATIONS[name].build(rule, None, w.WorkloadData(workload))


@pytest.mark.parametrize("rule, form", [("adagrad", "torch"), ("adamw", "torch")])
def test_torch_fused_adagrad_and_adamw(rule, form):
    pytest.importorskip("torch")
    data = w.WorkloadData(TINY)
    runner = impls.IMPLEMENTATIONS["torch"].build(rule, None, data, steps_per_call=3)
    runner.step()
    assert runner.form == form
    assert w.check_runner(data, rule, None, "torch", runner, steps=3) < 1e-4
    with pytest.raises(impls.Unavailable, match="torch has no fused lion"):
        impls.IMPLEMENTATIONS["torch"].build("lion", None, data)
