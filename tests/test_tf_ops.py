"""pyopt's TensorFlow custom ops (cpp/tf, called through pyopt.ops._fused) against the
float64 reference of tests/reference.py, and their checks, locking and copy-on-write.

What is compared: every variable and slot after one op call, with the reference applied to
the values before the call. Each op is also compared bitwise with the NumPy kernels
(pyopt.kernels): both run the same C++ core with the same float64 hyperparameters, so any
difference is a wiring mistake (a slot swapped, a hyperparameter dropped or rounded).

Tolerances, per array: ``|actual - expected| <= k*eps*(scale + |expected|)`` with
``scale`` the largest magnitude of the array before/after the step (the core's rounding
errors are relative to the operands p, lr*g, m, ..., not to a result that may cancel):
float64 and float32 k=4 (a few roundings in the dtype; measured < 1 eps), float16 and
bfloat16 k=2 (float32 maths, one rounding to the 16-bit dtype: <= eps/2, plus float32
noise). eps = 2.2e-16, 1.2e-7, 9.8e-4, 7.8e-3 respectively. These are far below the size
of one update (lr*g ~ 1e-2 relative), so a wrong formula fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import ml_dtypes
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import reference as ref
from kernel_cases import DTYPES, HYPER, STEPPED, at_step, call_multi, random_state, slot_arguments, table_row

from pyopt import _loader, ops

OPS = _loader._try_load()  # no warning here: the reason goes into the skip message
pytestmark = pytest.mark.skipif(OPS is None, reason=f"pyopt TF op library not loaded: {_loader.unavailable_reason()}")

from pyopt.ops import _fused
from pyopt.ops._api import StepOptions

K = {"float64": 4, "float32": 4, "float16": 2, "bfloat16": 2}
SHAPES = [(1,), (7,), (17,), (31, 33), (0,), (2, 3, 4)]
WD = [0.1, 0.0, 0.2, 0.05, 0.1, 0.3]  # one weight decay per tensor of SHAPES


def assert_close(actual, expected, before, dtype_name, name="", scale=0.0):
    """``|actual - expected| <= k*eps*(scale + |expected|)`` (module docstring); ``scale`` is at
    least the largest magnitude of the array before/after, or the given operand scale."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, name
    rtol = K[dtype_name] * float(ml_dtypes.finfo(DTYPES[dtype_name]).eps)
    scale = max(np.max(np.abs(e), initial=0.0), np.max(np.abs(np.asarray(before, np.float64)), initial=0.0), scale)
    atol = rtol * scale + 2 * float(ml_dtypes.finfo(DTYPES[dtype_name]).smallest_subnormal)
    bad = ~(np.abs(a - e) <= atol + rtol * np.abs(e))
    assert not bad.any(), (
        f"{name}: {bad.sum()} of {a.size} differ beyond rtol={rtol:.3g} atol={atol:.3g}; "
        f"max error {np.max(np.abs(a - e)):.3g}"
    )


def snapshot(variables) -> list:
    return [v.numpy().copy() for v in variables]


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class Case:
    """Random variables, gradients and slots for one rule; runs the fused op and both references."""

    def __init__(self, rule, dtype, shapes=SHAPES, seed=0, make_variable=tf.Variable):
        rng = np.random.default_rng(seed)
        self.rule, self.dtype = rule, dtype
        states = [random_state(rule, shape, DTYPES[dtype], rng) for shape in shapes]
        self.params = [p for p, _, _ in states]
        self.grads = [g for _, g, _ in states]
        self.slots = [s for _, _, s in states]  # slots[i] = slots of tensor i
        self.vars = [make_variable(p) for p in self.params]
        self.slot_vars = [[make_variable(s[k]) for s in self.slots] for k in range(len(ref.SLOTS[rule]))]

    def all_vars(self) -> list:
        return [*self.vars, *(v for lst in self.slot_vars for v in lst)]

    def run(self, hyper, grads=None, function=False, use_locking=True):
        grads = [tf.constant(g) for g in self.grads] if grads is None else grads
        return run_fused(self.rule, self.vars, grads, self.slot_vars, hyper, function, use_locking)

    def check(self, hyper, kernels=True, operands=False):
        """Compare the variables with the reference and (``kernels``), bitwise, with the NumPy
        kernels; ``operands``: the param also at the scale of its update's operands
        (reference.param_operand_scale), as the pure-TF backend's other order of operations needs."""
        kw = dict(hyper)
        got = [[self.vars[i].numpy(), *(lst[i].numpy() for lst in self.slot_vars)] for i in range(len(self.vars))]
        # Lion: a sign tie of the reference follows the op
        expected = ref.step_multi(self.rule, self.params, self.grads, self.slots, ties=[g[0] for g in got], **kw)
        names = ["var", *ref.SLOTS[self.rule]]
        for i in range(len(self.vars)):
            before = [self.params[i], *self.slots[i]]
            scale = ref.param_operand_scale(self.rule, self.grads[i], self.slots[i], expected[i][1:], **kw)
            for k, name in enumerate(names):
                assert got[i][k].dtype == DTYPES[self.dtype] and got[i][k].shape == before[k].shape
                operand_scale = scale if operands and k == 0 else 0.0
                assert_close(got[i][k], expected[i][k], before[k], self.dtype, f"{name}[{i}]", operand_scale)
        if not kernels:
            return
        params, slots = [p.copy() for p in self.params], [[s.copy() for s in ss] for ss in self.slots]
        assert call_multi(self.rule, params, self.grads, slots, **kw)
        for i in range(len(self.vars)):
            for k, name in enumerate(names):
                assert same_bits(got[i][k], [params[i], *slots[i]][k]), f"{name}[{i}] differs from pyopt.kernels"


def fused_call(rule, variables, grads, slot_vars, hyper, use_locking=True):
    """One call of the rule's multi-tensor op through pyopt.ops._fused.run (the caller's
    contract), with ``StepOptions`` built as given (unchecked: the op's own checks run).
    ``rule``: a name of reference.SLOTS; ``slot_vars[k]``: slot k of every variable."""
    hyper = dict(hyper)
    row = table_row(rule)
    options = StepOptions(
        weight_decay=tuple(hyper.pop("weight_decay", [0.0] * len(variables))),
        clipnorm=hyper.pop("clipnorm", None),
        global_clipnorm=hyper.pop("global_clipnorm", None),
        skip_nonfinite=hyper.pop("skip_nonfinite", False),
        use_locking=use_locking,
    )
    flags = {name: hyper.pop(name, False) for name in row.flags}
    given = dict(zip(ref.slot_names(rule), slot_vars, strict=True))
    slot_lists = [given.get(slot.name) for slot in row.slots]  # None: an optional slot not given
    return _fused.run(row, variables, grads, slot_lists, dict(row.defaults, **hyper), flags, options, sparse=False)


def run_fused(rule, variables, grads, slot_vars, hyper, function=False, use_locking=True):
    """:func:`fused_call`, eagerly or in a tf.function."""
    call = lambda g: fused_call(rule, variables, g, slot_vars, hyper, use_locking)
    return as_function(call)(grads) if function else call(grads)


def as_function(call):
    """``call`` in a tf.function that returns nothing (a graph op is no valid function output)."""

    def run(*args):
        call(*args)

    return tf.function(run)


# --------------------------------------------------------------------------- values

CONFIGS = [
    ("gradient_descent", {}),
    ("gradient_descent", dict(clipnorm=1.0, weight_decay=WD)),
    ("gradient_descent", dict(global_clipnorm=2.0)),
    ("momentum", dict(nesterov=False, global_clipnorm=2.0)),
    ("momentum", dict(nesterov=True, weight_decay=WD, clipnorm=1.0)),
    ("adam", dict(step=1)),
    ("adam", dict(step=7, clipnorm=1.0, weight_decay=WD)),
    ("adam_amsgrad", dict(step=3, global_clipnorm=2.0, weight_decay=WD)),
    ("adagrad", {}),
    ("adagrad", dict(clipnorm=1.0, weight_decay=WD)),
    ("rmsprop", dict(global_clipnorm=2.0)),
    ("rmsprop_momentum", dict(clipnorm=1.0, weight_decay=WD)),
    ("rmsprop_centered", dict(weight_decay=WD)),
    ("rmsprop_centered_momentum", dict(global_clipnorm=2.0, weight_decay=WD)),
    ("adamax", dict(step=1)),
    ("adamax", dict(step=7, clipnorm=1.0, weight_decay=WD)),
    ("nadam", dict(step=1)),
    ("nadam", dict(step=7, global_clipnorm=2.0, weight_decay=WD)),
    ("lion", {}),
    ("lion", dict(clipnorm=1.0, weight_decay=WD)),
]


def _hyper(rule, options, n):
    hyper = dict(HYPER[rule], **options)
    if "step" in options:
        hyper = at_step(rule, hyper, options["step"])
    hyper.setdefault("weight_decay", [0.0] * n)
    return hyper


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule, options", CONFIGS, ids=[f"{r}-{'-'.join(o)}" for r, o in CONFIGS])
def test_multi_matches_reference(rule, options, dtype, function):
    case = Case(rule, dtype)
    hyper = _hyper(rule, options, len(SHAPES))
    result = case.run(hyper, function=function)
    assert result is None or isinstance(result, tf.Operation)
    case.check(hyper)


@pytest.mark.parametrize("rule", list(ref.SLOTS))
def test_large_tensor_on_the_thread_pool(rule):
    """2**20+3 elements: many chunks on TF's intra-op pool, chunk edges inside a tensor."""
    case = Case(rule, "float32", shapes=[(2**20 + 3,), (5,)], seed=1)
    hyper = _hyper(rule, dict(clipnorm=100.0, step=2) if rule in STEPPED else dict(clipnorm=100.0), 2)
    case.run(hyper)
    case.check(hyper)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("rule", list(ref.SLOTS))
def test_single_tensor_ops(rule, dtype):
    """The single-tensor ops (N = 1 of the same kernel), called directly."""
    row = table_row(rule)
    case = Case(rule, dtype, shapes=[(3, 41)])
    hyper = _hyper(rule, dict(clipnorm=2.0, weight_decay=0.1, **({"step": 4} if rule in STEPPED else {})), 1)
    args = dict(
        var=case.vars[0].handle,
        grad=tf.constant(case.grads[0]),
        lr=tf.constant(hyper["lr"], tf.float32),
        weight_decay=tf.constant(0.1, tf.float64),
        clipnorm=tf.constant(2.0, tf.float64),
    )
    given = dict(zip(ref.SLOTS[rule], case.slot_vars, strict=True))
    for slot in row.slots:  # an optional slot: a list of none or one
        handles = [v.handle for v in given.get(slot.name, [])]
        args[slot.name] = handles if slot.optional else handles[0]
    hyper = dict(row.defaults, **hyper)  # RMSprop's momentum 0 when the case gives none
    for param in row.params[1:]:
        args[param.name] = tf.constant(hyper[param.name], tf.int64 if param.range.integer else tf.float64)
    getattr(OPS, row.fused_single_op)(**args)
    hyper["lr"] = float(np.float32(hyper["lr"]))  # passed as float32 above
    case.check(dict(hyper, weight_decay=[0.1]))


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
def test_hyperparameters_as_tensors_and_variables(function):
    """lr as a float32 variable (as Keras keeps it), float16/float64 tensors; step as an int64 variable."""
    case = Case("adam", "float32", shapes=[(17,), (4, 4)])
    lr = tf.Variable(0.01, dtype=tf.float32)
    step = tf.Variable(5, dtype=tf.int64)
    hyper = dict(HYPER["adam"], lr=lr, step=step, weight_decay=[0.0, 0.1], beta_1=tf.constant(0.8, tf.float64))
    case.run(hyper, function=function)
    case.check(dict(hyper, lr=float(np.float32(0.01)), step=5, beta_1=0.8))
    for lr in (tf.constant(0.5, tf.float16), tf.constant(0.25, tf.float64)):
        case = Case("gradient_descent", "float64", shapes=[(9,)])
        case.run(dict(lr=lr, weight_decay=[0.0]), function=function)
        case.check(dict(lr=float(lr.numpy()), weight_decay=[0.0]))


def _variable_hyperparameters(rule):
    """The case's hyperparameters as Keras passes them: lr a float32 variable, step an int64
    variable, Nadam's u_product a float64 variable (Keras's own is its optimizer's variable);
    and the numbers they hold (lr rounded to float32)."""
    numbers = dict(HYPER[rule])
    if rule in STEPPED:
        numbers = at_step(rule, numbers, 5)
    numbers["lr"] = float(np.float32(numbers["lr"]))
    tensors = dict(numbers, lr=tf.Variable(numbers["lr"], dtype=tf.float32))
    if "step" in numbers:
        tensors["step"] = tf.Variable(numbers["step"], dtype=tf.int64)
    if "u_product" in numbers:
        tensors["u_product"] = tf.Variable(numbers["u_product"], dtype=tf.float64)
    return tensors, numbers


@pytest.mark.parametrize("backend", ["fused", "tf"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rule", list(ref.SLOTS))
def test_public_functions_match_reference_on_both_backends(rule, dtype, backend):
    """pyopt.ops.<rule>_multi with variable hyperparameters (_variable_hyperparameters),
    weight decay and clipping, on each backend, against the reference; the fused one also
    bitwise against pyopt.kernels. The pure-TF backend computes the same expressions in
    another order (the rule row's update): the param is also compared at its operands' scale."""
    case = Case(rule, dtype)
    tensors, numbers = _variable_hyperparameters(rule)
    options = dict(weight_decay=WD, clipnorm=1.0)
    positional, optional = slot_arguments(rule, case.slot_vars, lambda slot: slot.list)
    function = getattr(ops, f"{table_row(rule).name}_multi")
    grads = [tf.constant(g) for g in case.grads]
    assert function(case.vars, grads, *positional, **optional, **tensors, **options, backend=backend) == backend
    case.check(dict(numbers, **options), kernels=backend == "fused", operands=backend == "tf")


def test_keras_variables():
    keras = pytest.importorskip("keras")
    case = Case("momentum", "float32", make_variable=keras.Variable)
    hyper = _hyper("momentum", dict(nesterov=True, clipnorm=1.0), len(SHAPES))
    assert _fused.supports(case.vars, [tf.constant(g) for g in case.grads]) is None
    case.run(hyper)
    case.check(hyper)


@pytest.mark.parametrize("rule", ["gradient_descent", "adam"])
def test_use_locking_false_gives_the_same_result(rule):
    case = Case(rule, "float32")
    hyper = _hyper(rule, dict(step=2) if rule == "adam" else {}, len(SHAPES))
    case.run(hyper, use_locking=False)
    case.check(hyper)


def test_skip_nonfinite_writes_nothing():
    case = Case("adam", "float32", shapes=[(5,), (3,)])
    before = snapshot(case.all_vars())
    grads = [tf.constant(case.grads[0]), tf.constant(np.array([1.0, np.nan, 2.0], np.float32))]
    case.run(dict(HYPER["adam"], weight_decay=[0.0, 0.0], skip_nonfinite=True), grads=grads)
    assert all(same_bits(a, b) for a, b in zip(snapshot(case.all_vars()), before))
    case.run(dict(HYPER["adam"], weight_decay=[0.0, 0.0], skip_nonfinite=True))  # finite: applied
    case.check(dict(HYPER["adam"], weight_decay=[0.0, 0.0]))


# --------------------------------------------------------------------------- in place, copy-on-write, locks


def test_update_is_in_place():
    """The variable keeps its handle, and a function traced before the step reads the new value."""
    case = Case("gradient_descent", "float32", shapes=[(4,)])
    var = case.vars[0]
    handle = var.handle
    read = tf.function(lambda: var.read_value())
    read()  # traced against the old state
    case.run(dict(lr=0.1, weight_decay=[0.0]))
    assert var.handle is handle
    np.testing.assert_array_equal(read().numpy(), var.numpy())
    case.check(dict(lr=0.1, weight_decay=[0.0]))


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
def test_copy_on_write_keeps_earlier_reads(function):
    """A tensor read from a variable or slot before the op keeps its value (TF's copy-on-write)."""
    case = Case("momentum", "float32", shapes=[(1000,), (3,)])
    hyper = _hyper("momentum", {}, 2)
    if function:

        @tf.function
        def step():
            reads = [v.read_value() for v in case.all_vars()]
            run_fused("momentum", case.vars, [tf.constant(g) for g in case.grads], case.slot_vars, hyper)
            return reads

        reads = step()
    else:
        reads = [v.value() for v in case.all_vars()]  # shares the variable's buffer
        case.run(hyper)
    before = [case.params[0], case.params[1], case.slots[0][0], case.slots[1][0]]
    for read, old in zip(reads, before):
        assert same_bits(read.numpy(), old)
    case.check(hyper)


def test_concurrent_steps_on_one_variable_lose_no_update():
    """Two threads stepping the same variables: with the locks every step is applied exactly once."""
    var, vel = tf.Variable(np.zeros(50_000)), tf.Variable(np.zeros(50_000))
    grad = tf.constant(np.ones(50_000))
    steps = 100

    def worker():
        for _ in range(steps):
            fused_call("momentum", [var], [grad], [[vel]], dict(lr=0.5, momentum=0.0))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # momentum 0: each step subtracts exactly 0.5 (exact in float64)
    np.testing.assert_array_equal(var.numpy(), np.full(50_000, -0.5 * 2 * steps))


def test_concurrent_steps_on_overlapping_lists_in_different_orders():
    """Threads stepping overlapping variable lists given in different orders ([a, b, c], [c, a],
    [b, c, a], [a]), with Adam slots and use_locking=True: the op locks every variable (and
    slot) in one global order, so no two steps deadlock, and each step is applied exactly once.

    Each variable always gets its own gradient and the same hyperparameters, so every step on
    it is the same function of its (p, m, v): the result is that function applied as many times
    as the variable was stepped, whatever the interleaving, bit for bit the serial result."""
    from pyopt import ops

    n, steps = 100_000, 40
    rng = np.random.default_rng(7)
    names = "abc"
    grads = {k: tf.constant(rng.standard_normal(n)) for k in names}
    orders = [("a", "b", "c"), ("c", "a"), ("b", "c", "a"), ("a",)]

    def state():
        return {k: [tf.Variable(np.ones(n)), tf.Variable(np.zeros(n)), tf.Variable(np.zeros(n))] for k in names}

    def step(vs, order):
        result = ops.adam_multi(
            [vs[k][0] for k in order],
            [grads[k] for k in order],
            [vs[k][1] for k in order],
            [vs[k][2] for k in order],
            lr=0.01,
            step=3,
            use_locking=True,
            backend="fused",
        )
        assert result == "fused"

    concurrent, errors = state(), []

    def worker(order):
        try:
            for _ in range(steps):
                step(concurrent, order)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(order,), daemon=True) for order in orders]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "concurrent steps deadlocked"
    assert not errors, errors

    serial = state()
    for order in orders:
        for _ in range(steps):
            step(serial, order)
    for k in names:
        for which, got, expected in zip(("var", "m", "v"), concurrent[k], serial[k]):
            np.testing.assert_array_equal(got.numpy(), expected.numpy(), err_msg=f"{which} of {k}: a step was lost")
    step(serial, ("a",))  # one step more or less shows: the comparison counts the steps
    assert not np.array_equal(serial["a"][0].numpy(), concurrent["a"][0].numpy())


@pytest.mark.slow
def test_single_intra_op_thread_gives_the_same_bits():
    """With tf.config.threading set to 1 intra-op thread the op runs on one thread, and
    (the core's chunking being fixed) gives bitwise the multi-threaded result."""
    case = Case("adam", "float32", shapes=[(2**20 + 3,)], seed=5)
    hyper = _hyper("adam", dict(clipnorm=100.0, step=3), 1)
    case.run(hyper)
    code = textwrap.dedent(
        f"""
        import sys, numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        sys.path.insert(0, {str(__import__("os").path.dirname(__file__))!r})
        import test_tf_ops as t
        case = t.Case("adam", "float32", shapes=[(2**20 + 3,)], seed=5)
        case.run({hyper!r})
        assert tf.config.threading.get_intra_op_parallelism_threads() == 1
        sys.stdout.buffer.write(b"".join(v.numpy().tobytes() for v in case.all_vars()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout == b"".join(v.numpy().tobytes() for v in case.all_vars())


# --------------------------------------------------------------------------- bad input


def _gd(variables, grads, **kw):
    return fused_call("gradient_descent", variables, grads, [], dict(dict(lr=0.1), **kw))


def _adam(variables, grads, ms, vs, vhats=None, **kw):
    slots = [ms, vs] + ([] if vhats is None else [vhats])
    return fused_call("adam", variables, grads, slots, dict(dict(lr=0.1, step=1), **kw))


def _f32(*shape):
    return tf.Variable(np.ones(shape, np.float32))


BAD = {}  # name -> build(): (variables that must stay unchanged, a call that must fail, message regex)


def bad(name):
    def register(build):
        BAD[name] = build
        return build

    return register


def g3():
    return tf.ones([3])


@bad("grad shape")
def _():
    v, w = _f32(3), _f32(3)
    return [v, w], lambda: _gd([v, w], [g3(), tf.ones([4])]), r"var\[1\] has shape \[3\] but grad\[1\] has shape \[4\]"


@bad("slot shape")
def _():
    v, m, s = _f32(3), _f32(3), _f32(4)
    return [v, m, s], lambda: _adam([v], [g3()], [m], [s]), r"v\[0\] has shape \[4\] but grad\[0\] has shape \[3\]"


@bad("var dtype")
def _():
    v = tf.Variable(np.ones(3))
    return [v], lambda: _gd([v], [g3()]), r"var\[0\] has dtype float64 but grad\[0\] has dtype float32"


@bad("slot dtype")
def _():
    v, m, s = _f32(3), tf.Variable(np.ones(3, np.float16)), _f32(3)
    return [v, m, s], lambda: _adam([v], [g3()], [m], [s]), r"m\[0\] has dtype float16 but grad\[0\] has dtype float32"


@bad("uninitialised")
def _():
    from tensorflow.python.ops import resource_variable_ops

    v, u = _f32(3), resource_variable_ops.UninitializedVariable(shape=[3], dtype=tf.float32)
    return [v], lambda: _gd([v, u], [g3(), g3()]), r"var\[1\] is uninitialised"


def _raw_adam_multi(variables, ms, vs, vhats, weight_decay):
    """The multi-tensor Adam op called directly (no list checks of pyopt.ops._fused)."""
    f64 = lambda x: tf.constant(x, tf.float64)
    return OPS.pyopt_apply_adam_multi(
        var=[x.handle for x in variables],
        m=[x.handle for x in ms],
        v=[x.handle for x in vs],
        vhat=[x.handle for x in vhats],
        grad=[g3() for _ in variables],
        lr=0.1,
        beta_1=f64(0.9),
        beta_2=f64(0.999),
        epsilon=f64(1e-7),
        step=tf.constant(1, tf.int64),
        weight_decay=f64(weight_decay),
        clipnorm=f64(0.0),
        global_clipnorm=f64(0.0),
    )


@bad("op: vhat length")
def _():
    v, w, m, m2, s, s2, h = (_f32(3) for _ in range(7))
    return [v, w, m, s, h], lambda: _raw_adam_multi([v, w], [m, m2], [s, s2], [h], 0.0), r"vhat has 1 variables but "


@bad("op: weight_decay length")
def _():
    v, m, s = _f32(3), _f32(3), _f32(3)
    call = lambda: _raw_adam_multi([v], [m], [s], [], [0.1, 0.2])
    return [v, m, s], call, r"weight_decay must be a scalar or have shape \[1\]"


@bad("negative lr")
def _():
    v = _f32(3)
    return [v], lambda: _gd([v], [g3()], lr=-1.0), r"lr must be a finite number >= 0, got -1"


@bad("nan lr")
def _():
    v = _f32(3)
    return [v], lambda: _gd([v], [g3()], lr=tf.constant(np.nan, tf.float32)), r"lr must be a finite number >= 0"


@bad("non-scalar lr")
def _():
    v = _f32(3)
    return [v], lambda: _gd([v], [g3()], lr=tf.constant([0.1, 0.2])), r"lr must be a scalar, got shape \[2\]"


@bad("beta_1 = 1")
def _():
    v, m, s = _f32(3), _f32(3), _f32(3)
    return [v, m, s], lambda: _adam([v], [g3()], [m], [s], beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1"


@bad("epsilon = 0")
def _():
    v, m, s = _f32(3), _f32(3), _f32(3)
    return [v, m, s], lambda: _adam([v], [g3()], [m], [s], epsilon=0.0), r"epsilon must be a finite number > 0"


@bad("step = 0")
def _():
    v, m, s = _f32(3), _f32(3), _f32(3)
    return [v, m, s], lambda: _adam([v], [g3()], [m], [s], step=0), r"step must be an integer >= 1, got 0"


@bad("momentum > 1")
def _():
    v, m = _f32(3), _f32(3)
    call = lambda: fused_call("momentum", [v], [g3()], [[m]], dict(lr=0.1, momentum=1.5))
    return [v, m], call, r"momentum must be in \[0, 1\], got 1.5"


@bad("negative weight decay")
def _():
    v, w = _f32(3), _f32(3)
    call = lambda: _gd([v, w], [g3(), g3()], weight_decay=[0.0, -0.1])
    return [v, w], call, r"weight_decay\[1\] must be a finite number >= 0"


@bad("both clipnorms")
def _():
    v = _f32(3)
    call = lambda: _gd([v], [g3()], clipnorm=1.0, global_clipnorm=1.0)
    return [v], call, r"clipnorm and global_clipnorm are mutually exclusive"


@bad("negative clipnorm")
def _():
    v = _f32(3)
    return [v], lambda: _gd([v], [g3()], clipnorm=-1.0), r"clipnorm must be a finite number > 0"


@bad("same variable twice")
def _():
    v, m = _f32(3), _f32(3)
    return [v, m], lambda: _adam([v], [g3()], [m], [m]), r"m\[0\] and v\[0\] are the same variable"


@bad("rmsprop: momentum without buffers")
def _():
    v, s = _f32(3), _f32(3)
    call = lambda: fused_call("rmsprop", [v], [g3()], [[s]], dict(lr=0.1, momentum=0.5))
    return [v, s], call, r"momentum must be 0 when no momentum_buffers are given, got 0.5"


@bad("rmsprop: rho > 1")
def _():
    v, s, b = _f32(3), _f32(3), _f32(3)
    call = lambda: fused_call("rmsprop_momentum", [v], [g3()], [[s], [b]], dict(lr=0.1, rho=1.5, momentum=0.9))
    return [v, s, b], call, r"rho must be in \[0, 1\], got 1.5"


def _raw_rmsprop_multi(variables, velocities, buffers, averages, momentum=0.9):
    """The multi-tensor RMSprop op called directly (no list checks of pyopt.ops._fused)."""
    f64 = lambda x: tf.constant(x, tf.float64)
    return OPS.pyopt_apply_rmsprop_multi(
        var=[x.handle for x in variables],
        velocity=[x.handle for x in velocities],
        momentum_buffer=[x.handle for x in buffers],
        average_gradient=[x.handle for x in averages],
        grad=[g3() for _ in variables],
        lr=0.1,
        rho=f64(0.9),
        momentum=f64(momentum),
        epsilon=f64(1e-7),
        weight_decay=f64(0.0),
        clipnorm=f64(0.0),
        global_clipnorm=f64(0.0),
    )


@bad("op: momentum_buffer length")
def _():
    v, w, s, s2, b = (_f32(3) for _ in range(5))
    call = lambda: _raw_rmsprop_multi([v, w], [s, s2], [b], [])
    return [v, w, s, s2, b], call, r"momentum_buffer has 1 variables but "


@bad("op: average_gradient length")
def _():
    v, w, s, s2, a = (_f32(3) for _ in range(5))
    call = lambda: _raw_rmsprop_multi([v, w], [s, s2], [], [a], momentum=0.0)
    return [v, w, s, s2, a], call, r"average_gradient has 1 variables but "


@bad("adamax: beta_2 > 1")
def _():
    v, m, u = _f32(3), _f32(3), _f32(3)
    call = lambda: fused_call("adamax", [v], [g3()], [[m], [u]], dict(lr=0.1, step=1, beta_2=1.5))
    return [v, m, u], call, r"beta_2 must be in \[0, 1\], got 1.5"


@bad("nadam: u_product = 1")
def _():
    v, m, s = _f32(3), _f32(3), _f32(3)
    call = lambda: fused_call("nadam", [v], [g3()], [[m], [s]], dict(lr=0.1, step=1, u_product=1.0))
    return [v, m, s], call, r"u_product must be in \[0, 1\), got 1"


@bad("lion: beta_1 = 0")
def _():
    v, m = _f32(3), _f32(3)
    call = lambda: fused_call("lion", [v], [g3()], [[m]], dict(lr=0.1, beta_1=0.0))
    return [v, m], call, r"beta_1 must be in \(0, 1\], got 0"


@bad("adagrad: epsilon = 0")
def _():
    v, a = _f32(3), _f32(3)
    call = lambda: fused_call("adagrad", [v], [g3()], [[a]], dict(lr=0.1, epsilon=0.0))
    return [v, a], call, r"epsilon must be a finite number > 0, got 0"


@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_and_writes_nothing(name, function):
    """Eagerly the kernel raises InvalidArgumentError; in a tf.function, errors visible at trace
    time (shapes, dtypes of known variables) come from the shape function as ValueError."""
    watch, call, match = BAD[name]()
    before = snapshot(watch)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
        (as_function(call) if function else call)()
    for v, old in zip(watch, before):
        assert same_bits(v.numpy(), old), "a failed op must not write"


@pytest.mark.parametrize(
    "lists, match",
    [
        (dict(grads=1), r"grads has 1 entries but variables has 2"),
        (dict(ms=1), r"ms has 1 entries but variables has 2"),
        (dict(vs=3), r"vs has 3 entries but variables has 2"),
        (dict(vhats=1), r"vhats has 1 entries but variables has 2"),
        (dict(weight_decay=3), r"weight_decay has 3 entries but variables has 2"),
    ],
)
def test_list_length_mismatch_is_rejected(lists, match):
    """Checked by pyopt.ops before the op runs (TF's own error for this names no input)."""
    from pyopt import ops

    lengths = dict(dict(grads=2, ms=2, vs=2, vhats=2, weight_decay=2), **lists)
    variables = [_f32(3), _f32(3)]
    slots = {name: [_f32(3) for _ in range(lengths[name])] for name in ("ms", "vs", "vhats")}
    before = snapshot([*variables, *slots["ms"], *slots["vs"], *slots["vhats"]])
    with pytest.raises(ValueError, match=match):
        ops.adam_multi(
            variables,
            [g3() for _ in range(lengths["grads"])],
            slots["ms"],
            slots["vs"],
            vhats=slots["vhats"],
            lr=0.1,
            step=1,
            weight_decay=[0.0] * lengths["weight_decay"],
            backend="fused",
        )
    assert all(
        same_bits(a, b) for a, b in zip(snapshot([*variables, *slots["ms"], *slots["vs"], *slots["vhats"]]), before)
    )


@pytest.mark.parametrize(
    "lists, error, match",
    [
        (dict(momentum_buffers=1), ValueError, r"^momentum_buffers has 1 entries but variables has 2$"),
        (dict(average_gradients=3), ValueError, r"^average_gradients has 3 entries but variables has 2$"),
        (dict(momentum_buffers=None), TypeError, r"^momentum_buffers\[1\] must be a tf.Variable or keras.Variable"),
        (dict(average_gradients=None), TypeError, r"^average_gradients\[1\] must be a tf.Variable or keras.Variable"),
    ],
)
def test_rmsprop_optional_slots_for_some_variables_only(lists, error, match):
    """An optional slot list holds one variable per variable or is not given: shorter or longer
    lists, or None for one variable, are refused before either backend runs."""
    variables = [_f32(3), _f32(3)]
    slots = {name: [_f32(3), _f32(3)] for name in ("velocities", "momentum_buffers", "average_gradients")}
    for name, n in lists.items():
        slots[name] = [slots[name][0], None] if n is None else [_f32(3) for _ in range(n)]
    watch = [*variables, *(v for lst in slots.values() for v in lst if v is not None)]
    before = snapshot(watch)
    with pytest.raises(error, match=match):
        ops.rmsprop_multi(variables, [g3(), g3()], **slots, lr=0.1, momentum=0.9, backend="fused")
    assert all(same_bits(a, b) for a, b in zip(snapshot(watch), before))


# --------------------------------------------------------------------------- supports()


def test_supports_reasons(monkeypatch):
    v32, v64 = _f32(3), tf.Variable(np.ones(3))
    g32 = tf.ones([3])
    assert _fused.supports([v32], [g32]) is None
    assert _fused.supports([v32], [tf.IndexedSlices(g32, tf.constant([0, 1, 2]))]) is None  # Pyopt>SparseApply*
    assert "mixed dtypes" in _fused.supports([v32, v64], [g32, tf.ones([3], tf.float64)])
    assert "grads[0] has dtype float64" in _fused.supports([v32], [tf.ones([3], tf.float64)])
    assert "dtype int32" in _fused.supports([tf.Variable([1, 2])], [tf.constant([1, 2])])
    assert "not a resource variable" in _fused.supports([tf.ones([3])], [g32])
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "unavailable_reason", lambda: "no library here")
    assert "no library here" in _fused.supports([v32], [g32])


def test_op_docs_state_the_formula():
    assert "alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)" in OPS.pyopt_apply_adam_multi.__doc__
    assert "m = mu*m - lr*g" in OPS.pyopt_apply_momentum.__doc__
    assert "acc = acc + g^2;  p = p - lr*wd*p - lr*g/sqrt(acc + epsilon)" in OPS.pyopt_apply_adagrad_multi.__doc__
    assert "[centered: a = rho*a + (1-rho)*g, v - a^2 in place of v]" in OPS.pyopt_apply_rmsprop_multi.__doc__
    assert "u = max(beta_2*u, |g|)" in OPS.pyopt_apply_adamax.__doc__
    assert "u_{t+1}*m/(1 - u_product*u_{t+1})" in OPS.pyopt_apply_nadam_multi.__doc__
    assert "p = p - lr*wd*p - lr*sign(beta_1*m + (1-beta_1)*g)" in OPS.pyopt_apply_lion.__doc__
