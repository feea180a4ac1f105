"""Row-sparse gradients (tf.IndexedSlices) in pyopt.ops on both backends: the fused
``Pyopt>SparseApply*Multi`` ops and the pure-TF fallback.

References (tests/reference.py, NumPy float64, written from the formulas):
  dense-equivalent (default, lazy=False): the dense step with the densified gradient
    (duplicate rows summed; absent rows get g = 0, so slots decay and weight decay applies);
  lazy=True: the dense step on the rows present only, with the clip factor of the whole
    (summed) gradient; every other row and its slots keep their exact bits.
The fused op is also compared bitwise with the NumPy sparse kernels (same C++ core).

Tolerances, per array: ``|actual - expected| <= k*eps*(scale + |expected|)`` with ``scale``
the largest magnitude of the array before/after the step (as in test_tf_ops.py): float64
and float32 k=8 (the dense ops' few roundings, plus the summation of up to ~4 duplicate
rows in the dtype); float16/bfloat16 k=4 (float32 maths and one rounding to the 16-bit
dtype, plus the fused core's rounding of the summed gradient rows to the 16-bit dtype,
which the pure-TF path keeps in float32). eps = 2.2e-16, 1.2e-7, 9.8e-4, 7.8e-3. An update
is ~1e-2 relative, far above these.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import reference as ref
from kernel_cases import DTYPES, HYPER, call_sparse, random_state, slot_arguments, table_row

import pyopt.ops as po
from pyopt import _loader

OPS = _loader._try_load()
NEEDS_OPS = pytest.mark.skipif(OPS is None, reason=f"no op library: {_loader.unavailable_reason()}")
BACKENDS = [pytest.param("fused", marks=NEEDS_OPS), "tf"]
K = {"float64": 8, "float32": 8, "float16": 4, "bfloat16": 4}
# (rows, row shape) of the variables of one call: sizes that do and don't fill a SIMD vector.
SHAPES = [(1, ()), (7, (3,)), (17, (1,)), (300, (33,)), (0, (4,)), (4, (2, 3))]
WD = [0.1, 0.0, 0.2, 0.05, 0.1, 0.3]


def tf_dtype(name):
    return tf.dtypes.as_dtype(DTYPES[name])


def assert_close(actual, expected, before, dtype_name, name=""):
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, name
    finfo = ml_dtypes.finfo(DTYPES[dtype_name])
    rtol = K[dtype_name] * float(finfo.eps)
    scale = max(np.max(np.abs(e), initial=0.0), np.max(np.abs(np.asarray(before, np.float64)), initial=0.0))
    atol = rtol * scale + 2 * float(finfo.smallest_subnormal)
    bad = ~(np.abs(a - e) <= atol + rtol * np.abs(e))
    assert not bad.any(), (
        f"{name}: {bad.sum()} of {a.size} differ beyond rtol={rtol:.3g} atol={atol:.3g}; "
        f"max error {np.max(np.abs(a - e)):.3g}"
    )


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def densify(values, indices, rows):
    dense = np.zeros((rows,) + values.shape[1:], np.float64)
    np.add.at(dense, indices, values.astype(np.float64))
    return dense


class Case:
    """Variables, slots and IndexedSlices gradients (with duplicate rows) for one rule."""

    def __init__(self, rule, dtype, shapes=SHAPES, seed=0, index_dtype=np.int64, dense=()):
        rng = np.random.default_rng(seed)
        self.rule, self.dtype, self.dense = rule, dtype, set(dense)
        self.params, self.slots, self.values, self.indices = [], [], [], []
        for rows, row_shape in shapes:
            param, _, slots = random_state(rule, (rows,) + row_shape, DTYPES[dtype], rng)
            nnz = 2 * rows + 1 if rows else 0  # duplicates guaranteed
            self.indices.append(
                rng.integers(0, rows, size=nnz).astype(index_dtype) if rows else np.zeros(0, index_dtype)
            )
            self.values.append(rng.standard_normal((nnz,) + row_shape).astype(DTYPES[dtype]))
            self.params.append(param)
            self.slots.append(slots)
        self.vars = [tf.Variable(p) for p in self.params]
        self.slot_vars = [[tf.Variable(s[k]) for s in self.slots] for k in range(len(ref.SLOTS[rule]))]

    def grads(self):
        """IndexedSlices (dense tensors at the positions in ``dense``)."""
        out = []
        for i, (v, idx, p) in enumerate(zip(self.values, self.indices, self.params)):
            if i in self.dense:
                out.append(tf.constant(densify(v, idx, p.shape[0]).astype(DTYPES[self.dtype])))
            else:
                out.append(tf.IndexedSlices(tf.constant(v), tf.constant(idx), tf.constant(p.shape, tf.int64)))
        return out

    def all_vars(self):
        return [*self.vars, *(v for lst in self.slot_vars for v in lst)]

    def call(self, backend, grads=None, **kw):
        return call(
            self.rule, self.vars, self.grads() if grads is None else grads, self.slot_vars, backend=backend, **kw
        )

    def expected(self, lazy, hyper, ties):
        """float64 reference of every (param, *slots) after one step; ``ties``: the params the
        step wrote (Lion's sign ties follow them)."""
        dense = [densify(v, i, p.shape[0]) for v, i, p in zip(self.values, self.indices, self.params)]
        if not lazy:
            return ref.step_multi(self.rule, self.params, dense, self.slots, ties=ties, **hyper)
        hyper = dict(hyper)
        clipnorm, global_clipnorm = hyper.pop("clipnorm", None), hyper.pop("global_clipnorm", None)
        decays = hyper.pop("weight_decay", 0.0)
        decays = decays if isinstance(decays, list) else [decays] * len(dense)
        total = sum(float(np.sum(g**2)) for g in dense)
        out = []
        for i, (p, g, slots) in enumerate(zip(self.params, dense, self.slots)):
            if i in self.dense:  # a dense gradient moves every row, lazy or not
                touched = np.arange(p.shape[0])
            else:
                touched = np.unique(self.indices[i])
            scale = (
                ref.clip_scale(total, global_clipnorm) if global_clipnorm else ref.clip_scale(np.sum(g**2), clipnorm)
            )
            new = [a.astype(np.float64) for a in (p, *slots)]
            sub = ref.step(
                self.rule,
                p[touched],
                g[touched] * scale,
                [s[touched] for s in slots],
                weight_decay=decays[i],
                ties=ties[i][touched],
                **hyper,
            )
            for full, rows in zip(new, sub):
                full[touched] = rows
            out.append(tuple(new))
        return out

    def check(self, lazy, hyper):
        expected = self.expected(lazy, hyper, ties=[v.numpy() for v in self.vars])
        names = ["var", *ref.SLOTS[self.rule]]
        for i in range(len(self.vars)):
            got = [self.vars[i].numpy(), *(lst[i].numpy() for lst in self.slot_vars)]
            before = [self.params[i], *self.slots[i]]
            untouched = np.setdiff1d(np.arange(self.params[i].shape[0]), self.indices[i])
            for k, name in enumerate(names):
                assert got[k].dtype == DTYPES[self.dtype] and got[k].shape == before[k].shape
                assert_close(got[k], expected[i][k], before[k], self.dtype, f"{name}[{i}]")
                if lazy and i not in self.dense:
                    assert same_bits(got[k][untouched], before[k][untouched]), f"lazy step moved {name}[{i}]"


def call(rule, variables, grads, slot_vars, *, backend, **hyper):
    """One pyopt.ops *_multi call of ``rule`` (a key of reference.SLOTS), through its table row."""
    positional, optional = slot_arguments(rule, slot_vars, lambda slot: slot.list)
    function = getattr(po, f"{table_row(rule).name}_multi")
    return function(variables, grads, *positional, **optional, backend=backend, **dict(HYPER[rule], **hyper))


OPTIONS = [
    {},
    dict(clipnorm=0.5, weight_decay=WD),
    dict(global_clipnorm=2.0, weight_decay=0.01),
]


# --------------------------------------------------------------------------- values


# Options in float32/float64; the 16-bit dtypes run the plain step.
DTYPE_OPTIONS = [(d, o) for d in DTYPES for o in range(len(OPTIONS)) if o == 0 or d in ("float32", "float64")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lazy", [False, True], ids=["dense-equivalent", "lazy"])
@pytest.mark.parametrize("dtype, options", DTYPE_OPTIONS)
@pytest.mark.parametrize("rule", list(ref.SLOTS))
def test_matches_reference(rule, dtype, lazy, backend, options):
    case = Case(rule, dtype, seed=options)
    hyper = dict(OPTIONS[options], nesterov=True) if rule == "momentum" and options == 1 else OPTIONS[options]
    assert case.call(backend, lazy=lazy, **hyper) == backend
    ref_hyper = dict(HYPER[rule], **hyper)
    case.check(lazy, ref_hyper)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lazy", [False, True], ids=["dense-equivalent", "lazy"])
def test_large_embedding(backend, lazy):
    """A 1027 x 1021 table (1_048_567 elements, about 2**20, not a multiple of any vector width):
    the update runs in chunks on TF's thread pool."""
    shapes = [(1027, (1021,))]
    case = Case("adam", "float32", shapes=shapes, seed=7)
    case.call(backend, lazy=lazy, clipnorm=10.0, step=3)
    case.check(lazy, dict(HYPER["adam"], clipnorm=10.0, step=3))


@NEEDS_OPS
@pytest.mark.parametrize("rule", list(ref.SLOTS))
@pytest.mark.parametrize("lazy", [False, True], ids=["dense-equivalent", "lazy"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_fused_equals_numpy_kernels_bitwise(rule, lazy, dtype):
    """The op and pyopt.kernels.*_sparse run the same core: any difference is a wiring mistake."""
    case = Case(rule, dtype, seed=3)
    case.call("fused", lazy=lazy, clipnorm=0.7, weight_decay=WD)
    for i in range(len(case.vars)):
        p, slots = case.params[i].copy(), [s.copy() for s in case.slots[i]]
        args = dict(HYPER[rule], clipnorm=0.7, weight_decay=WD[i], lazy=lazy)
        vals, idx = case.values[i], case.indices[i]
        call_sparse(rule, p, vals, idx, slots, **args)
        for got, want in zip([case.vars[i], *(lst[i] for lst in case.slot_vars)], [p, *slots]):
            assert same_bits(got.numpy(), want)


@pytest.mark.parametrize("lazy", [False, True], ids=["dense-equivalent", "lazy"])
@pytest.mark.parametrize(
    "backend, mode", [pytest.param("fused", "tf.function", marks=NEEDS_OPS), ("tf", "tf.function"), ("tf", "xla")]
)
def test_in_tf_function(backend, lazy, mode):
    """Traced, and for the pure-TF path also XLA-compiled (custom ops have no XLA kernel;
    backend="auto" picks "tf" there)."""
    case = Case("adam", "float32", seed=11)
    grads = case.grads()
    step = tf.function(
        lambda: case.call(backend, grads=grads, lazy=lazy, weight_decay=0.1, global_clipnorm=1.0) and None,
        jit_compile=mode == "xla",
    )
    step()
    case.check(lazy, dict(HYPER["adam"], weight_decay=0.1, global_clipnorm=1.0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lazy", [False, True], ids=["dense-equivalent", "lazy"])
@pytest.mark.parametrize("option", ["global_clipnorm", "clipnorm"])
def test_mixed_dense_and_sparse(backend, lazy, option):
    """Dense and IndexedSlices gradients in one call (two op calls on the fused path); the
    global norm spans both kinds."""
    case = Case("momentum", "float64", seed=5, dense=(1, 3))
    hyper = {option: 1.5, "weight_decay": WD}
    assert case.call(backend, lazy=lazy, **hyper) == backend
    case.check(lazy, dict(HYPER["momentum"], **hyper))


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_and_int64_indices(backend):
    for index_dtype in (np.int32, np.int64):
        case = Case("adam", "float64", seed=2, index_dtype=index_dtype)
        case.call(backend)
        case.check(False, HYPER["adam"])
    # One call with both kinds.
    case = Case("adam", "float64", seed=2)
    grads = case.grads()
    grads[1] = tf.IndexedSlices(grads[1].values, tf.cast(grads[1].indices, tf.int32), grads[1].dense_shape)
    case.call(backend, grads=grads, lazy=True)
    case.check(True, HYPER["adam"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_equal_presummed(backend):
    """A row listed twice moves as if its slices were summed first (Adam's v sees (a+b)^2)."""
    values = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 0.5]])
    p = np.arange(10.0).reshape(5, 2)
    out = []
    for vals, idx in ((values, [2, 2, 4]), (np.stack([values[0] + values[1], values[2]]), [2, 4])):
        v, m, s = tf.Variable(p), tf.Variable(np.zeros_like(p)), tf.Variable(np.zeros_like(p))
        po.adam(v, tf.IndexedSlices(tf.constant(vals), tf.constant(idx)), m, s, lr=0.1, step=1, backend=backend)
        out.append([v.numpy(), m.numpy(), s.numpy()])
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_nonfinite_writes_nothing(backend):
    case = Case("adam", "float32", seed=4, dense=(1,))
    case.values[3][0, 0] = np.nan
    before = [v.numpy() for v in case.all_vars()]
    case.call(backend, skip_nonfinite=True)
    assert all(same_bits(v.numpy(), b) for v, b in zip(case.all_vars(), before))


@NEEDS_OPS
@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
def test_copy_on_write_keeps_earlier_reads(function):
    """Rows are updated in place (copy-on-read mode), yet a value read before the op keeps it."""
    var = tf.Variable(np.ones((6, 3), np.float32))
    grad = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([1, 4]))

    def run():
        before = var.read_value()
        po.gradient_descent(var, grad, lr=1.0, backend="fused", lazy=True)
        return before, var.read_value()

    before, after = tf.function(run)() if function else run()
    np.testing.assert_array_equal(before.numpy(), np.ones((6, 3)))
    np.testing.assert_array_equal(after.numpy()[[1, 4]], np.zeros((2, 3)))
    np.testing.assert_array_equal(np.delete(after.numpy(), [1, 4], axis=0), np.ones((4, 3)))


@NEEDS_OPS
@pytest.mark.parametrize("lazy", [False, True], ids=["dense-equivalent", "lazy"])
def test_concurrent_sparse_steps_lose_no_update(lazy):
    """use_locking=True: steps from several threads on one variable are serialised."""
    import threading

    var = tf.Variable(np.zeros((1000, 8)))
    grad = tf.IndexedSlices(tf.ones([3, 8], tf.float64), tf.constant([5, 7, 5]))
    threads, steps = 4, 25

    def work():
        for _ in range(steps):
            po.gradient_descent(var, grad, lr=0.5, backend="fused", lazy=lazy)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    want = np.zeros((1000, 8))
    want[5], want[7] = -0.5 * 2 * threads * steps, -0.5 * threads * steps  # row 5 is listed twice
    np.testing.assert_array_equal(var.numpy(), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_use_locking_false_and_keras_variables(backend):
    """use_locking=False (shared locks on the fused path) gives the same single-threaded result,
    and keras.Variable objects work like the tf.Variables behind them."""
    results = []
    for use_locking, make in ((True, tf.Variable), (False, tf.Variable), (True, keras.Variable)):
        case = Case("adam", "float32", seed=9)
        case.vars = [make(p) for p in case.params]
        case.slot_vars = [[make(s[k]) for s in case.slots] for k in range(2)]
        case.call(backend, lazy=True, use_locking=use_locking)
        case.check(True, HYPER["adam"])
        results.append([np.asarray(v.numpy()) for v in case.all_vars()])
    assert all(same_bits(a, b) for r in results[1:] for a, b in zip(results[0], r))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("bad", [-1, 5, 2**40])
@pytest.mark.parametrize("mixed", [False, True], ids=["sparse", "with a dense gradient"])
def test_out_of_range_index_raises_and_writes_nothing(backend, function, bad, mixed):
    """The bad gradient comes after a valid one (dense: a separate op call on the fused path)."""
    w, v = tf.Variable(np.ones((3, 2))), tf.Variable(np.ones((5, 2)))
    ms = [tf.Variable(np.zeros((3, 2))), tf.Variable(np.zeros((5, 2)))]
    vs = [tf.Variable(np.zeros((3, 2))), tf.Variable(np.zeros((5, 2)))]
    watch = [w, v, *ms, *vs]
    before = [x.numpy() for x in watch]
    valid = (
        tf.ones([3, 2], tf.float64)
        if mixed
        else tf.IndexedSlices(tf.ones([1, 2], tf.float64), tf.constant([2], tf.int64))
    )
    grads = [valid, tf.IndexedSlices(tf.ones([2, 2], tf.float64), tf.constant([0, bad], tf.int64))]

    def step():
        po.adam_multi([w, v], grads, ms, vs, lr=0.1, step=1, backend=backend)

    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="indices"):
        (tf.function(step) if function else step)()
    assert all(same_bits(x.numpy(), b) for x, b in zip(watch, before)), "a failed step must not write"


@NEEDS_OPS
def test_out_of_range_message_names_the_index():
    v = tf.Variable(np.ones((5, 2), np.float32))
    grad = tf.IndexedSlices(tf.ones([3, 2]), tf.constant([0, 1, 7]))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"indices\[0\]\[2\] = 7 is out of range \[0, 5\) \(the rows of var\[0\]\)"
    ):
        po.gradient_descent(v, grad, lr=0.1, backend="fused")


def _raw_sparse_gd(var, values, indices):
    f64 = lambda x: tf.constant(x, tf.float64)
    return OPS.pyopt_sparse_apply_gradient_descent_multi(
        var=[var.handle],
        values=[values],
        indices=[indices],
        lr=0.1,
        weight_decay=f64(0.0),
        clipnorm=f64(0.0),
        global_clipnorm=f64(0.0),
    )


BAD_OP = {
    "values row shape": (
        (5, 2),
        tf.ones([2, 3]),
        tf.constant([0, 1]),
        r"values\[0\] has shape \[2,3\] but var\[0\] has shape \[5,2\]|"
        r"var\[0\] has shape \[5,2\] but values\[0\] has shape \[2,3\]",
    ),
    "indices length": ((5, 2), tf.ones([2, 2]), tf.constant([0, 1, 2]), r"indices\[0\] .*one entry per row of values"),
    "indices rank": ((5, 2), tf.ones([2, 2]), tf.constant([[0, 1]]), r"indices|rank"),
    "scalar var": ((), tf.ones([1]), tf.constant([0]), r"rank >= 1|values"),
    "values dtype": ((5, 2), tf.ones([2, 2], tf.float64), tf.constant([0, 1]), r"dtype float32 but values"),
}


@NEEDS_OPS
@pytest.mark.parametrize("function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", list(BAD_OP))
def test_sparse_op_checks_inputs(name, function):
    """The op itself (no Python checks): a clear error naming the input, nothing written.
    In a tf.function the shape function may catch it first (ValueError)."""
    shape, values, indices, match = BAD_OP[name]
    var = tf.Variable(np.ones(shape, np.float32))
    before = var.numpy()
    call = lambda: _raw_sparse_gd(var, values, indices) and None
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
        (tf.function(call) if function else call)()
    assert same_bits(var.numpy(), before)


@NEEDS_OPS
def test_sparse_op_on_an_uninitialised_variable_raises():
    """Caught before the variable is switched to copy-on-read mode (which would copy a tensor
    that does not exist)."""
    from tensorflow.python.ops import resource_variable_ops

    var = resource_variable_ops.UninitializedVariable(shape=[5, 2], dtype=tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"var\[0\] is uninitialised"):
        _raw_sparse_gd(var, tf.ones([2, 2]), tf.constant([0, 1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_sparse_arguments_in_python(backend):
    v = tf.Variable(1.0)
    with pytest.raises(ValueError, match=r"variables\[0\] is a scalar"):
        po.gradient_descent(v, tf.IndexedSlices(tf.ones([1]), tf.constant([0])), lr=0.1, backend=backend)
    w = tf.Variable(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match=r"grads\[0\] is a tf.IndexedSlices with float32 indices"):
        po.gradient_descent(w, tf.IndexedSlices(tf.ones([1, 2]), tf.constant([0.0])), lr=0.1, backend=backend)


@NEEDS_OPS
def test_auto_picks_fused_for_indexed_slices():
    from pyopt.ops import _fused

    v = tf.Variable(np.ones((3, 2), np.float32))
    g = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([1]))
    assert _fused.supports([v], [g]) is None
    assert po.gradient_descent(v, g, lr=0.1) == "fused"
    assert "float64" in _fused.supports([v], [tf.IndexedSlices(tf.ones([1, 2], tf.float64), tf.constant([1]))])


@NEEDS_OPS
def test_one_sparse_op_per_step_in_a_graph():
    """All IndexedSlices of a dtype go into one Pyopt>SparseApply op, dense ones into one dense op."""
    case = Case("adam", "float32", seed=1, dense=(1, 2))
    grads = case.grads()
    fn = tf.function(lambda: case.call("fused", grads=grads) and None)
    ops = [op.type for op in fn.get_concrete_function().graph.get_operations()]
    assert ops.count("Pyopt>SparseApplyAdamMulti") == 1 and ops.count("Pyopt>ApplyAdamMulti") == 1


@NEEDS_OPS
def test_op_docs_state_the_semantics():
    doc = OPS.pyopt_sparse_apply_adam_multi.__doc__
    assert "lazy" in doc and "densified" in doc and "alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)" in doc


# --------------------------------------------------------------------------- Keras Embedding model


def _embedding_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4,), dtype="int32"), keras.layers.Embedding(20, 3), keras.layers.Flatten(), keras.layers.Dense(1)]
    )


def _batches(unique_tokens, steps=4):
    rng = np.random.default_rng(0)
    for _ in range(steps):
        if unique_tokens:  # no token twice in a batch
            x = rng.permutation(20)[:12].reshape(3, 4)
        else:
            x = rng.integers(0, 6, size=(3, 4))  # many repeats, rows 6.. never used
        yield tf.constant(x, tf.int32), tf.constant(rng.standard_normal((3, 1)), tf.float32)


def _train_keras(optimizer, unique_tokens, densify=False):
    model = _embedding_model(1)
    for x, y in _batches(unique_tokens):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [v.numpy() for v in model.trainable_variables]


def _train_pyopt(rule, backend, unique_tokens, lazy=False, **hyper):
    """The tape's raw gradients (IndexedSlices for the embedding) into one pyopt.ops call per step,
    with slots shaped like Keras's."""
    model = _embedding_model(1)
    variables = [v.value for v in model.trainable_variables]  # the tf.Variables behind them
    slots = [[tf.Variable(tf.zeros_like(v)) for v in variables] for _ in range(2)]
    before = [v.numpy() for v in variables]
    for t, (x, y) in enumerate(_batches(unique_tokens), start=1):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        if rule == "adam":
            assert po.adam_multi(variables, grads, *slots, step=t, backend=backend, lazy=lazy, **hyper) == backend
        else:
            assert po.momentum_multi(variables, grads, slots[0], backend=backend, lazy=lazy, **hyper) == backend
    return [v.numpy() for v in variables], before


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_model_adam_equals_keras(backend):
    """A batch with no repeated token: pyopt.ops.adam_multi on the raw IndexedSlices gradients
    equals keras.optimizers.Adam (float32 maths on both sides: rtol 1e-5)."""
    want = _train_keras(keras.optimizers.Adam(0.01), unique_tokens=True)
    got, _ = _train_pyopt("adam", backend, unique_tokens=True, lr=0.01)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_model_repeated_tokens(backend):
    """Repeated tokens (duplicate indices): momentum equals keras SGD(momentum) as is; Adam
    equals keras Adam given the densified gradient (Keras's own IndexedSlices Adam adds the
    squares of the slices to v instead of squaring their sum)."""
    want = _train_keras(keras.optimizers.SGD(0.05, momentum=0.9), unique_tokens=False)
    got, _ = _train_pyopt("momentum", backend, unique_tokens=False, lr=0.05, momentum=0.9)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    want = _train_keras(keras.optimizers.Adam(0.01), unique_tokens=False, densify=True)
    got, _ = _train_pyopt("adam", backend, unique_tokens=False, lr=0.01)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_model_lazy_adam_leaves_unused_rows(backend):
    """Tokens 6.. never occur. With weight decay the default step decays their rows (Keras);
    lazy Adam leaves them bitwise alone and moves the others."""
    got, before = _train_pyopt("adam", backend, unique_tokens=False, lazy=True, lr=0.01, weight_decay=0.5)
    assert same_bits(got[0][6:], before[0][6:])
    assert not np.any(got[0][:6] == before[0][:6])
    dense, _ = _train_pyopt("adam", backend, unique_tokens=False, lr=0.01, weight_decay=0.5)
    np.testing.assert_allclose(dense[0][6:], before[0][6:] * (1 - 0.01 * 0.5) ** 4, rtol=1e-6)
