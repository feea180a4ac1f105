"""pyopt.kernels (NumPy API) against the float64 reference of tests/reference.py.

Every rule and option combination, at sizes that do and don't fill a SIMD vector or a
parallel chunk, in float32, float64, float16 and bfloat16; single steps and 100-step
trajectories; multi-tensor calls; every ISA path of this CPU; 1 vs 2 threads; the
non-finite gradient policy.

Tolerances (TOLERANCE below) are ``k * eps(dtype) * scale``, where ``scale`` is the largest
magnitude of the array before or after the step: the kernels' rounding errors are relative
to the operands (p, lr*g, m, ...), not to a result that may cancel to near zero, so each
array is compared with ``rtol = atol/scale = k * eps``.

- float64 single step, k=4: computed in double in another order than the reference
  (``p - p*(lr*wd) - g*lr`` vs ``p - lr*wd*p - lr*g``), a few roundings of eps 2.2e-16.
- float32 single step, k=4: computed in float32 (eps 1.2e-7) with the per-step scalars
  rounded to float32; ~5 roundings of at most eps/2 each (measured: < 0.7 eps), i.e. an
  rtol of 5e-7, tighter than the usual 1e-5.
- float16 / bfloat16 single step, k=2: the maths is float32 and the stored result is
  rounded once to the dtype, so the error is half an ulp of the dtype (<= eps/2 relative)
  plus float32 noise (measured: < 0.5 eps).
- Trajectories (100 steps): the reference rounds every stored array (param and slots) to
  the dtype after each step, as the kernel stores them, so only each step's rounding
  difference accumulates. float32/float64 k=64: a difference of at most ~1 ulp per step,
  not amplified by gradient descent or Adam, integrated by momentum (p sums m)
  (measured: < 7 eps). float16/bfloat16 k=8: both sides usually round to the same 16-bit
  value, an occasional 1-ulp disagreement persists (measured: <= 1 eps). The scale is the
  largest magnitude the array (for the param also its update's operands) reached during
  the 100 steps: a step's rounding is relative to that step's values, and a sum that later
  cancels (RMSprop's momentum buffer b = mu*b + inc may end far below the increments it
  summed) keeps it. These bounds are still far below the size of one update (lr*g ~ 1e-2),
  so a wrong formula fails.

The param of a single step is compared at the scale of its update's operands as well
(reference.param_operand_scale, derived there per rule). Lion's sign ties (reference.lion)
follow the kernel; any other element must match.
"""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest
import reference as ref
from kernel_cases import (
    DTYPES,
    HYPER,
    STEPPED,
    at_step,
    call,
    call_multi,
    copies,
    random_state,
    same_bits,
    table_row,
)

import pyopt
from pyopt import _core, kernels

TOLERANCE = {  # dtype: k for a single step, k for a 100-step trajectory (units: eps * scale)
    "float64": dict(step=4, trajectory=64),
    "float32": dict(step=4, trajectory=64),
    "float16": dict(step=2, trajectory=8),
    "bfloat16": dict(step=2, trajectory=8),
}
SIZES = [0, 1, 7, 17, 1023, 2**20 + 3]
TRAJECTORY_SIZES = SIZES
STEPS = 100
# Trajectories longer than this tile a random base of this many elements (a prime, so the
# tiles straddle every SIMD vector and chunk edge at a different phase); see
# test_trajectory_matches_reference.
TRAJECTORY_BASE = 4099
CLIP = "clip"  # placeholder: clipnorm = half the gradient's norm, so that clipping is active


def _configs():
    """(id, rule, options) for every option combination of every rule (case of reference.SLOTS)."""
    out = []
    for wd, clip in itertools.product([0.0, 0.1], [None, CLIP]):
        for rule in ref.SLOTS:
            if rule == "momentum":
                for nesterov in (False, True):
                    out.append((rule, dict(nesterov=nesterov, weight_decay=wd, clipnorm=clip)))
            elif rule in STEPPED:
                out.append((rule, dict(weight_decay=wd, clipnorm=clip, step=7)))
            else:
                out.append((rule, dict(weight_decay=wd, clipnorm=clip)))
    for rule in STEPPED:  # first step (no history) and a late one
        out += [(rule, dict(step=1)), (rule, dict(step=1000))]
    return [pytest.param(r, o, id=_config_id(r, o)) for r, o in out]


def _config_id(rule, options):
    return f"{rule}-" + "-".join(f"{k}={v}" for k, v in options.items())


CONFIGS = _configs()
RULES = list(ref.SLOTS)


def sum_of_squares(grad) -> float:
    """``sum(g*g)`` in float64, as the reference's clip_by_norm computes it."""
    g = np.asarray(grad, np.float64)
    return float(np.sum(g * g))


def hyper_for(rule, options, grad, sumsq=None):
    """The rule's hyperparameters with `options`, CLIP turned into a value from `grad`
    (or from its precomputed `sumsq` = sum_of_squares(grad))."""
    hyper = dict(HYPER[rule], **options)
    if "step" in options:
        hyper = at_step(rule, hyper, options["step"])
    if hyper.get("clipnorm") == CLIP:
        norm = float(np.sqrt(sum_of_squares(grad) if sumsq is None else sumsq))
        hyper["clipnorm"] = 0.5 * norm if norm > 0 else 1.0
    return hyper


def _max_finite_abs(a) -> float:
    a = np.abs(np.asarray(a, np.float64))
    return float(np.max(a, where=np.isfinite(a), initial=0.0))


def assert_close(actual, expected, before, dtype_name, kind="step", name="", scale=0.0):
    """``|actual - expected| <= k*eps*(scale + |expected|) + 2*smallest_subnormal``.

    k from TOLERANCE; scale = largest finite magnitude of the array before/after the step
    (or the given `scale`, the magnitude of other operands, if larger); the subnormal term
    covers float16 results below 2**-14 (absolute ulp 2**-24).
    NaN must meet NaN and Inf the same Inf.
    """
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, name
    info = ml_dtypes.finfo(DTYPES[dtype_name])
    rtol = TOLERANCE[dtype_name][kind] * float(info.eps)
    atol = rtol * max(_max_finite_abs(e), _max_finite_abs(before), scale) + 2 * float(info.smallest_subnormal)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(a - e) <= atol + rtol * np.abs(e)) | (a == e) | (np.isnan(a) & np.isnan(e))
    if not ok.all():
        bad = np.flatnonzero(~ok.reshape(-1))
        i = bad[0]
        raise AssertionError(
            f"{name}: {bad.size} of {a.size} elements differ beyond rtol={rtol:.3g}, atol={atol:.3g}; "
            f"first at flat index {i}: actual {a.reshape(-1)[i]!r}, expected {e.reshape(-1)[i]!r}"
        )


def seeded_state(rule, size, dtype_name, seed=0):
    """The random state of (rule, size, dtype, seed): the same values on every call."""
    return random_state(rule, size, DTYPES[dtype_name], np.random.default_rng(seed + size))


# The largest size costs ~0.2 s per single step and 1-7 s per trajectory. The first rules run
# it for the configs below; the rules added later (Adagrad, RMSprop, Adamax, Nadam, Lion),
# whose options the small sizes cover as well, for fewer: single steps with weight decay and
# clipping together in every dtype, trajectories of that config in float32.
FIRST_RULES = ("gradient_descent", "momentum", "adam", "adam_amsgrad")


def _both_options(options) -> bool:
    return bool(options.get("weight_decay")) and bool(options.get("clipnorm"))


def _single_step_cases():
    """Every config at every size, except the largest size: there, only configs with no
    option or with weight decay and clipping together (the options are covered by the
    small sizes; the large one adds the thread pool and chunk edges); for the later rules
    only the latter."""
    out = []
    for (rule, options), dtype, size in itertools.product([c.values for c in CONFIGS], DTYPES, SIZES):
        some = sum(bool(options.get(k)) for k in ("weight_decay", "clipnorm"))
        if size < SIZES[-1] or (some != 1 if rule in FIRST_RULES else some == 2):
            out.append(pytest.param(rule, options, dtype, size, id=f"{_config_id(rule, options)}-{dtype}-{size}"))
    return out


def _trajectory_cases():
    """Every config, dtype and size, except the later rules at the largest size: there,
    weight decay and clipping together, in float32."""
    out = []
    for (rule, options), dtype, size in itertools.product([c.values for c in CONFIGS], DTYPES, TRAJECTORY_SIZES):
        if size < SIZES[-1] or rule in FIRST_RULES or (_both_options(options) and dtype == "float32"):
            out.append(pytest.param(rule, options, dtype, size, id=f"{_config_id(rule, options)}-{dtype}-{size}"))
    return out


@pytest.mark.parametrize("rule, options, dtype, size", _single_step_cases())
def test_single_step_matches_reference(rule, options, dtype, size):
    """The param is compared at the scale of its update's operands too (reference.param_operand_scale)."""
    param, grad, slots = seeded_state(rule, size, dtype)
    before = copies([param, grad, *slots])
    hyper = hyper_for(rule, options, grad)
    assert call(rule, param, grad, slots, **hyper) is True
    assert same_bits(grad, before[1]), "the gradient must not be written"
    expected = ref.step(rule, before[0], before[1], before[2:], ties=param, **hyper)
    operands = ref.param_operand_scale(rule, before[1], before[2:], expected[1:], **hyper)
    for k, (name, got, want, old) in enumerate(
        zip(["param", *ref.SLOTS[rule]], [param, *slots], expected, [before[0], *before[2:]])
    ):
        assert got.dtype == DTYPES[dtype] and got.shape == (size,)
        assert_close(got, want, old, dtype, "step", name, scale=operands if k == 0 else 0.0)


@pytest.mark.parametrize("rule, options, dtype, size", _trajectory_cases())
def test_trajectory_matches_reference(rule, options, dtype, size):
    """100 steps with a new gradient each step; the reference stores its state in the dtype.

    Sizes above TRAJECTORY_BASE (2**20+3) run the kernel on the whole array, with its thread
    pool and chunk edges, but the initial state and each step's gradient are a fresh random
    base of TRAJECTORY_BASE elements repeated (np.resize) to the size: the float64 reference
    over the whole array takes ~5-15 s per test on a 2-core machine (~15 min for all
    configs), on the base ~1 s. The update is elementwise except for the clipping
    norm, so the reference on the base, given the clip factor of the whole gradient (here
    pre-applied to the base gradient: exactly the products the reference computes), is
    bitwise the reference on the whole array, element for element; every element of the
    whole array is then compared with it, at the same tolerance.
    """
    dt = DTYPES[dtype]
    rng = np.random.default_rng(size)
    base = min(size, TRAJECTORY_BASE)
    param, _, slots = random_state(rule, base, dt, rng)
    ref_state = [param.copy(), *(s.copy() for s in slots)]
    if base < size:
        param, slots = np.resize(param, size), [np.resize(s, size) for s in slots]
    start = options.get("step", 1)
    # Nadam: the running product u_1*...*u_t, kept as Keras keeps it (from 1.0, times u_t each step)
    u_product = ref.nadam_u_product(start - 1, HYPER[rule]["beta_1"]) if "u_product" in HYPER[rule] else None
    peak = [_max_finite_abs(a) for a in ref_state]  # each array's largest magnitude over the steps
    for step in range(start, start + STEPS):
        ref_grad = grad = rng.standard_normal(base).astype(dt)
        if base < size:
            grad = np.resize(ref_grad, size)
        sumsq = sum_of_squares(grad) if options.get("clipnorm") == CLIP else None  # of the whole gradient
        hyper = ref_hyper = hyper_for(rule, options, grad, sumsq)
        if rule in STEPPED:
            hyper["step"] = step
        if u_product is not None:
            u_product *= ref.nadam_u(step, hyper["beta_1"])
            hyper["u_product"] = u_product
        if base < size and sumsq is not None:
            ref_grad = ref.clip_by_norm(ref_grad, None) * ref.clip_scale(sumsq, hyper["clipnorm"])
            ref_hyper = dict(hyper, clipnorm=None)
        assert call(rule, param, grad, slots, **hyper) is True
        # Lion: a sign tie of the reference follows the kernel (the first tile: every tile is alike)
        out = ref.step(rule, ref_state[0], ref_grad, ref_state[1:], ties=param[:base], **ref_hyper)
        operands = ref.param_operand_scale(rule, ref_grad, ref_state[1:], out[1:], **ref_hyper)
        ref_state = [a.astype(dt) for a in out]
        peak = [max(m, float(np.max(np.abs(a), initial=0.0))) for m, a in zip(peak, out)]  # finite here
        peak[0] = max(peak[0], operands)
    for name, got, want, scale in zip(["param", *ref.SLOTS[rule]], [param, *slots], ref_state, peak):
        want = np.resize(want, size) if base < size else want
        assert_close(got, want, want, dtype, "trajectory", name, scale=scale)


@pytest.mark.parametrize("shape", [(), (1, 1), (3, 5, 7), (2, 0, 4), (129, 257)])
@pytest.mark.parametrize("rule", RULES)
def test_any_shape_equals_flat(rule, shape):
    """N-d C-contiguous arrays are updated as their flat view (bitwise)."""
    param, grad, slots = random_state(rule, shape, np.float32, np.random.default_rng(3))
    flat = [a.reshape(-1).copy() for a in (param, grad, *slots)]
    hyper = dict(HYPER[rule], clipnorm=1.5)
    assert call(rule, param, grad, slots, **hyper)
    assert call(rule, flat[0], flat[1], flat[2:], **hyper)
    for got, want in zip([param, *slots], [flat[0], *flat[2:]]):
        assert got.shape == shape and same_bits(got.reshape(-1), want)


# --------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_clipnorm_inactive_below_threshold(rule, dtype):
    """||g|| <= clipnorm: the factor is exactly 1, so the result is bitwise the unclipped one."""
    a = seeded_state(rule, 1023, dtype)
    b = copies(a)
    norm = float(np.sqrt(np.sum(a[1].astype(np.float64) ** 2)))
    assert call(rule, a[0], a[1], a[2], **HYPER[rule], clipnorm=norm * 1.01)
    assert call(rule, b[0], b[1], b[2], **HYPER[rule])
    assert all(same_bits(x, y) for x, y in zip([a[0], *a[2]], [b[0], *b[2]]))


# --------------------------------------------------------------------------- multi-tensor

MULTI_SIZES = [17, 0, 1, 40_000, 1023, 70_001, 7, 33_000]  # several tensors span chunk edges


def multi_states(rule, dtype, seed=5):
    rng = np.random.default_rng(seed)
    return [random_state(rule, n, DTYPES[dtype], rng) for n in MULTI_SIZES]


def unzip(states):
    return [s[0] for s in states], [s[1] for s in states], [s[2] for s in states]


@pytest.mark.parametrize("options", [{}, dict(weight_decay=0.1), dict(clipnorm=20.0)], ids=["plain", "wd", "clip"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_multi_equals_single(rule, dtype, options):
    """One *_multi call == one single-tensor call per tensor, bitwise (same dtype)."""
    states = multi_states(rule, dtype)
    singles = copies(states)
    hyper = dict(HYPER[rule], **options)
    assert call_multi(rule, *unzip(states), **hyper) is True
    for p, g, s in singles:
        assert call(rule, p, g, s, **hyper) is True
    for i, ((p, _, s), (q, _, t)) in enumerate(zip(states, singles)):
        for name, x, y in zip(["param", *ref.SLOTS[rule]], [p, *s], [q, *t]):
            assert same_bits(x, y), f"tensor {i} (size {MULTI_SIZES[i]}) {name} differs"


@pytest.mark.parametrize("clipnorm", [1.0, 1e6], ids=["active", "inactive"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_global_clipnorm_matches_reference(rule, dtype, clipnorm):
    states = multi_states(rule, dtype)
    before = copies(states)
    params, grads, slots = unzip(states)
    hyper = dict(HYPER[rule], weight_decay=[0.0, 0.1, 0.2, 0.0, 0.3, 0.05, 0.0, 1.0])
    assert call_multi(rule, params, grads, slots, global_clipnorm=clipnorm, **hyper) is True
    expected = ref.step_multi(rule, *unzip(before), global_clipnorm=clipnorm, ties=params, **hyper)
    for i, (got, want, old) in enumerate(zip(states, expected, before)):
        assert same_bits(got[1], old[1])
        for name, x, y, o in zip(["param", *ref.SLOTS[rule]], [got[0], *got[2]], want, [old[0], *old[2]]):
            assert_close(x, y, o, dtype, "step", f"tensor {i} {name}")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_per_tensor_weight_decay(rule, dtype):
    """A weight_decay list applies decay i to tensor i (== single calls, and the reference)."""
    decays = [0.5, 0.0, 0.1, 0.0, 0.3, 0.2, 0.0, 0.01]
    states = multi_states(rule, dtype)
    singles, before = copies(states), copies(states)
    assert call_multi(rule, *unzip(states), **HYPER[rule], weight_decay=decays)
    for (p, g, s), wd in zip(singles, decays):
        assert call(rule, p, g, s, **HYPER[rule], weight_decay=wd)
    expected = ref.step_multi(rule, *unzip(before), **HYPER[rule], weight_decay=decays, ties=unzip(states)[0])
    for got, single, want, old in zip(states, singles, expected, before):
        for x, y, z, o in zip([got[0], *got[2]], [single[0], *single[2]], want, [old[0], *old[2]]):
            assert same_bits(x, y)
            assert_close(x, z, o, dtype)


# --------------------------------------------------------------------------- ISA paths and threads


@pytest.fixture
def restore_isa():
    old = _core.isa()
    yield
    _core.set_isa(old)


@pytest.fixture
def restore_threads():
    old = _core.num_threads()
    yield
    pyopt.set_num_threads(old)


def run_everything(rule, dtype, options):
    """One multi call (several sizes, chunk edges, clipping) and one single call; all outputs."""
    states = multi_states(rule, dtype, seed=11)
    assert call_multi(rule, *unzip(states), **dict(HYPER[rule], **options))
    param, grad, slots = seeded_state(rule, 2**16 + 5, dtype, seed=12)
    assert call(rule, param, grad, slots, **HYPER[rule], clipnorm=10.0, weight_decay=0.1)
    return [param, *slots] + [a for p, _, s in states for a in (p, *s)]


def rule_options(rule, options):
    """``options`` without the flags that ``rule`` has not (nesterov is momentum's)."""
    return {k: v for k, v in options.items() if k != "nesterov" or k in table_row(rule).flags}


OPTION_SETS = [
    pytest.param({}, id="plain"),
    pytest.param(dict(clipnorm=30.0, weight_decay=0.1, nesterov=True), id="clip-wd-nesterov"),
    pytest.param(dict(global_clipnorm=30.0), id="global-clip"),
]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_isa_paths_bitwise_equal(rule, dtype, options, restore_isa):
    """Every ISA path of this CPU gives the same bits (built with -ffp-contract=off)."""
    options = rule_options(rule, options)
    isas = _core.supported_isas()
    assert isas[0] == "baseline"
    results = {}
    for isa in isas:
        _core.set_isa(isa)
        assert _core.isa() == isa
        results[isa] = run_everything(rule, dtype, options)
    for isa in isas[1:]:
        assert all(same_bits(a, b) for a, b in zip(results["baseline"], results[isa])), isa


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_thread_count_does_not_change_results(rule, dtype, options, restore_threads):
    options = rule_options(rule, options)
    results = []
    for threads in (1, 2, 3):
        pyopt.set_num_threads(threads)
        assert _core.num_threads() == threads
        results.append(run_everything(rule, dtype, options))
    for other in results[1:]:
        assert all(same_bits(a, b) for a, b in zip(results[0], other))


def test_isa_names():
    assert set(_core.supported_isas()) <= {"baseline", "avx2", "avx512"}
    assert _core.isa() in _core.supported_isas()
    with pytest.raises(ValueError, match="ISA"):
        _core.set_isa("sse9")


# --------------------------------------------------------------------------- non-finite gradients

BAD_VALUES = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_skip_nonfinite_leaves_everything_untouched(rule, dtype, bad):
    states = multi_states(rule, dtype)
    states[5][1][12345] = bad  # one element of one gradient in the middle of the call
    before = copies(states)
    for options in ({}, dict(clipnorm=1.0), dict(global_clipnorm=1.0)):
        assert call_multi(rule, *unzip(states), **HYPER[rule], skip_nonfinite=True, **options) is False
        assert all(
            same_bits(a, b) for s, t in zip(states, before) for a, b in zip([s[0], s[1], *s[2]], [t[0], t[1], *t[2]])
        )
    p, g, s = states[0]
    g[3] = bad
    assert call(rule, p, g, s, **HYPER[rule], skip_nonfinite=True) is False
    assert all(same_bits(a, b) for a, b in zip([p, *s], [before[0][0], *before[0][2]]))


@pytest.mark.parametrize("rule", RULES)
def test_skip_nonfinite_applies_finite_steps(rule):
    a = seeded_state(rule, 1023, "float32")
    b = copies(a)
    assert call(rule, a[0], a[1], a[2], **HYPER[rule], skip_nonfinite=True, clipnorm=3.0) is True
    assert call(rule, b[0], b[1], b[2], **HYPER[rule], clipnorm=3.0) is True
    assert all(same_bits(x, y) for x, y in zip([a[0], *a[2]], [b[0], *b[2]]))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", RULES)
def test_default_nonfinite_policy_matches_keras(rule, dtype):
    """Without skip_nonfinite the step is applied as Keras 3 (TF backend) applies it:

    - no clipping: NaN/Inf reach only their own element: NaN gives p=NaN (Keras SGD:
      [nan, 1, 1] -> [nan, .9, .9]); Inf gives p=-Inf for gradient descent and momentum,
      p = 1 - lr*sign(Inf) for Lion, and p=NaN for the others, which divide Inf by Inf
      (Adam's m/sqrt(v), Adagrad's g/sqrt(acc), RMSprop's g/sqrt(v), Adamax's m/u);
      every other element is updated normally.
    - clipnorm with a NaN: the norm is NaN, the factor c/max(NaN, c) is NaN (tf.maximum
      propagates NaN), so every element becomes NaN (Keras: [nan, 1, 1] -> all NaN).
    - clipnorm with an Inf: the factor is c/Inf = 0, so the Inf element becomes Inf*0 = NaN
      and the others get a zero gradient (Keras: [inf, 1, 1] -> [nan, 1, 1]).
    The reference's float64 arithmetic follows the same rules; checked against it too.
    """
    dt = DTYPES[dtype]
    for bad, clip in itertools.product(BAD_VALUES, [None, 1.0]):
        param = np.ones(20, dt)
        grad = np.ones(20, dt)
        grad[7] = bad
        slots = [np.zeros(20, dt) for _ in ref.SLOTS[rule]]
        hyper = dict(HYPER[rule], clipnorm=clip)
        expected = ref.step(rule, param, grad, slots, **hyper)
        assert call(rule, param, grad, slots, **hyper) is True
        p = param.astype(np.float64)
        others = np.delete(p, 7)
        if clip is None:
            assert np.all(np.isfinite(others)) and np.all(others < 1.0)
            want = _p_after_a_nonfinite_gradient(rule, bad)
            np.testing.assert_allclose(p[7], want, rtol=float(ml_dtypes.finfo(dt).eps), atol=0)
        elif np.isnan(bad):
            assert np.all(np.isnan(p))
        else:
            assert np.isnan(p[7]) and np.all(others == 1.0)  # zero gradient, no weight decay
        for name, got, want, old in zip(
            ["param", *ref.SLOTS[rule]], [param, *slots], expected, [np.ones(20), *(np.zeros(20),) * 3]
        ):
            assert_close(got, want, old, dtype, "step", name)


def _p_after_a_nonfinite_gradient(rule, bad):
    """p = 1 after a step with the gradient `bad` and zero slots, unclipped."""
    if np.isnan(bad):
        return np.nan
    if rule in ("gradient_descent", "momentum"):  # p = 1 - lr*g (momentum: m = -lr*g, p = 1 + m)
        return -bad
    if rule == "lion":  # p = 1 - lr*sign(b1*0 + (1 - b1)*g)
        return 1.0 - HYPER[rule]["lr"] * np.sign(bad)
    return np.nan  # Inf/Inf


def test_nonfinite_global_clipnorm_poisons_every_tensor():
    """global_clipnorm with a NaN in one gradient: the joint norm is NaN, every tensor gets NaN."""
    params = [np.ones(5, np.float32), np.ones(3, np.float32)]
    grads = [np.ones(5, np.float32), np.array([1, np.nan, 1], np.float32)]
    assert kernels.gradient_descent_multi(params, grads, lr=0.1, global_clipnorm=1.0) is True
    assert all(np.all(np.isnan(p)) for p in params)


def test_skip_nonfinite_applies_huge_finite_gradients():
    """skip_nonfinite skips only gradients holding NaN/Inf: float64 values above ~1e154 are
    finite even though their squares (the norm pass) overflow to Inf."""
    for multi in (False, True):
        param, grad = np.ones(3), np.array([1e200, 1.0, 1.0])
        if multi:
            assert kernels.gradient_descent_multi([param], [grad], lr=1e-200, skip_nonfinite=True) is True
        else:
            assert kernels.gradient_descent(param, grad, lr=1e-200, skip_nonfinite=True) is True
        np.testing.assert_allclose(param, [0.0, 1.0, 1.0])  # 1 - 1e-200 * 1e200


# --------------------------------------------------------------------------- AdamW, Lion's ties, RMSprop centered


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adamw_is_adam_with_a_weight_decay_of_0_004(dtype):
    """kernels.adamw[_multi|_sparse]: Adam's kernels with weight_decay=0.004 unless given;
    bitwise kernels.adam with it, and the reference Adam with it (0.004*lr on p ~ 1 is far
    above the tolerance in these dtypes, so a missing decay fails)."""
    hyper = dict(HYPER["adamw"], step=3)
    a = seeded_state("adamw", 1023, dtype)
    b, before = copies(a), copies(a)
    assert kernels.adamw(a[0], a[1], *a[2], **hyper) is True
    assert kernels.adam(b[0], b[1], *b[2], weight_decay=0.004, **hyper) is True
    assert all(same_bits(x, y) for x, y in zip([a[0], *a[2]], [b[0], *b[2]]))
    expected = ref.adam(before[0], before[1], *before[2], weight_decay=0.004, **hyper)
    for name, got, want, old in zip(["param", "m", "v"], [a[0], *a[2]], expected, [before[0], *before[2]]):
        assert_close(got, want, old, dtype, "step", name)
    # a weight decay given wins; the multi and sparse forms have the same default
    c = copies(before)
    assert kernels.adamw_multi([c[0]], [c[1]], [c[2][0]], [c[2][1]], weight_decay=[0.0], **hyper) is True
    d = copies(before)
    assert kernels.adam(d[0], d[1], *d[2], **hyper) is True
    assert same_bits(c[0], d[0])
    e, f = copies(before), copies(before)
    rows = np.array([3, 3, 100])
    values = np.ones((3,), DTYPES[dtype])
    assert kernels.adamw_sparse(e[0], values, rows, *e[2], **hyper) is True
    assert kernels.adam_sparse(f[0], values, rows, *f[2], weight_decay=0.004, **hyper) is True
    assert same_bits(e[0], f[0])


def test_lion_sign_ties_follow_the_kernel_and_nothing_else():
    """Where b1*m + (1-b1)*g is 0 up to rounding (here g = -9*m with b1 = 0.9, exact in
    float32), the float32 kernel may take another sign than float64, a difference of 2*lr:
    the reference takes the kernel's sign on those elements (counted in SIGN_TIES) and on no
    other, so a wrong sign elsewhere still fails, and either sign on a tie passes."""
    param, grad, (m,) = seeded_state("lion", 3000, "float32")
    ties = [10, 1000, 2999]
    m[ties] = [0.125, -0.25, 0.5]
    grad[ties] = -9 * m[ties]
    hyper = HYPER["lion"]
    before = copies([param, grad, m])
    assert call("lion", param, grad, [m], **hyper) is True
    assert np.flatnonzero(ref.lion_ties(before[1], before[2], **hyper)).tolist() == ties
    counted = ref.SIGN_TIES["elements"]
    expected = ref.step("lion", before[0], before[1], [before[2]], ties=param, **hyper)
    assert ref.SIGN_TIES["elements"] == counted + len(ties)
    assert_close(param, expected[0], before[0], "float32", name="param")
    assert_close(m, expected[1], before[2], "float32", name="m")
    for i, accepted in ((ties[0], True), (11, False)):  # the other sign: on a tie, and elsewhere
        other = param.copy()
        other[i] += 2 * (before[0][i] - param[i])  # p0 - lr*s -> p0 + lr*s
        want = ref.step("lion", before[0], before[1], [before[2]], ties=other, **hyper)[0]
        if accepted:
            assert_close(other, want, before[0], "float32", name="param")
        else:
            with pytest.raises(AssertionError, match="1 of 3000 elements differ"):
                assert_close(other, want, before[0], "float32", name="param")


def test_rmsprop_centered_alone_runs():
    """RMSprop with average gradients and no momentum buffers on pyopt.kernels (single, multi,
    sparse) gives the reference's step: the second optional slot given without the first
    reaches the kernel as that slot (it once took the first one's place and crashed)."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((2, 40, 3))
    v = 0.01 * rng.standard_normal((40, 3)) ** 2
    a = np.sqrt(v) * rng.uniform(-0.9, 0.9, (40, 3))
    expected = ref.rmsprop(p, g, v, average_gradient=a, lr=0.01)
    x = [y.copy() for y in (p, g, v, a)]
    assert kernels.rmsprop(x[0], x[1], x[2], average_gradient=x[3], lr=0.01) is True
    y = [z.copy() for z in (p, g, v, a)]
    assert kernels.rmsprop_multi([y[0]], [y[1]], [y[2]], average_gradients=[y[3]], lr=0.01) is True
    z = [w.copy() for w in (p, v, a)]
    assert kernels.rmsprop_sparse(z[0], g, np.arange(40), z[1], average_gradient=z[2], lr=0.01) is True
    for got in ([x[0], x[2], x[3]], [y[0], y[2], y[3]], z):
        for array, want in zip(got, expected, strict=True):
            np.testing.assert_allclose(array, want, rtol=1e-13, atol=1e-15)
