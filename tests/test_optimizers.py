"""pyopt.optimizers against the Keras 3 built-ins, on both backends.

Every numeric case runs the pyopt optimizer and the ``keras.optimizers`` class of the same
name (Adam, SGD, Adagrad, RMSprop, Adamax, Nadam, Lion, AdamW) with the same arguments on
the same initial values and gradient sequence, and compares the model variables and all
optimizer variables (slots, EMA averages, accumulators, iterations, Nadam's running product).

Tolerances (absolute + relative, ``np.testing.assert_allclose``), variables of order 1:
- float32, 200 steps: rtol=atol=2e-5. The two differ only in rounding: pyopt computes the
  per-step scalars (Adam's alpha, lr*wd, clip factors) in float64 and rounds once, Keras in
  float32.
- float64, 200 steps, against the NumPy float64 reference (``tests/reference.py``):
  rtol=atol=1e-11.
- float16 200 steps, bfloat16 20 steps: Keras does the maths in the variable's 16-bit type, pyopt in
  float32 with one rounding at the end, so they differ by a few units in the last place per
  step: atol=rtol=2e-2 (float16; observed <= 1.1e-2), 5e-2 (bfloat16; observed <= 1.8e-2),
  and Keras's params must move beyond it. A single step is checked tightly: it equals
  Keras's float32 step rounded to the 16-bit type within 1 ulp (2^-10, 2^-7 relative).
- fused vs tf backend, 200 float32 steps: rtol=atol=1e-5.
- Lion: its direction sign(b1*m + (1-b1)*g) is discontinuous; where the argument is within
  float32 rounding of 0 (a "near tie", see ``lion_near_ties``) pyopt and Keras may take
  different signs, a difference of 2*lr in that element. Only those elements get 2*lr per
  near tie on top of the tolerance; near ties are counted and must stay rare.
"""

from __future__ import annotations

import copy
import re

import keras
import ml_dtypes
import numpy as np
import pytest
import reference
import tensorflow as tf
from backends import fused_unavailable_reason

import pyopt.optimizers as po

SHAPES = [(), (1,), (7,), (1023,), (3, 17)]
STEPS = 200
TOL = {"float32": 2e-5, "float64": 1e-11, "float16": 2e-2, "bfloat16": 5e-2}


# ---------------------------------------------------------------------------------------
# One trajectory: same initial values and gradients for a pyopt and a Keras optimizer.

RULES = {
    "adam": ("Adam", dict(learning_rate=0.01)),
    "adam_amsgrad": ("Adam", dict(learning_rate=0.01, amsgrad=True)),
    "sgd": ("SGD", dict(learning_rate=0.01)),
    "momentum": ("SGD", dict(learning_rate=0.01, momentum=0.9)),
    "nesterov": ("SGD", dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
    "adagrad": ("Adagrad", dict(learning_rate=0.01)),
    "adagrad_initial": ("Adagrad", dict(learning_rate=0.01, initial_accumulator_value=0.5, epsilon=1e-5)),
    "rmsprop": ("RMSprop", dict(learning_rate=0.01, rho=0.8)),
    "rmsprop_momentum": ("RMSprop", dict(learning_rate=0.01, momentum=0.9)),
    "rmsprop_centered": ("RMSprop", dict(learning_rate=0.01, centered=True)),
    "rmsprop_centered_momentum": ("RMSprop", dict(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True)),
    "adamax": ("Adamax", dict(learning_rate=0.01)),
    "nadam": ("Nadam", dict(learning_rate=0.01)),
    "lion": ("Lion", dict(learning_rate=0.001)),
    "adamw": ("AdamW", dict(learning_rate=0.01)),
}


# One case per new class, with every optional slot
CLASS_RULES = ["adagrad", "rmsprop_centered_momentum", "adamax", "nadam", "lion", "adamw"]


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=10, decay_rate=0.9)


FEATURES = {
    "plain": {},
    "clipnorm": dict(clipnorm=1.0),
    "global_clipnorm": dict(global_clipnorm=2.0),
    "clipvalue": dict(clipvalue=0.5),
    "weight_decay": dict(weight_decay=0.05),  # with v1 and v3 excluded, see run()
    "schedule": dict(learning_rate=_schedule),
    "ema": dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=7),
    "accumulation": dict(gradient_accumulation_steps=3),
    "loss_scale": dict(loss_scale_factor=128.0),  # the gradients are scaled by 128 too
}


def make_pair(rule: str, backend: str, **extra):
    """A pyopt optimizer and the Keras built-in with the same arguments."""
    name, kwargs = RULES[rule]
    kwargs = {**kwargs, **extra}
    fresh = lambda: {k: (v() if callable(v) else v) for k, v in kwargs.items()}
    return getattr(po, name)(**fresh(), backend=backend), getattr(keras.optimizers, name)(**fresh())


def gradient_sequence(shapes, steps, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    return [[scale * rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def run(optimizer, init, grads, dtype, *, compiled=True, exclude=()):
    """Applies ``grads`` (a list per step) to fresh variables; returns (variables, optimizer variables).

    ``compiled``: all steps in one ``tf.function`` (a ``tf.range`` loop over the stacked
    gradients), else one eager ``apply_gradients`` per step.
    """
    variables = [keras.Variable(x, dtype=dtype, name=f"v{i}") for i, x in enumerate(init)]
    if exclude:
        optimizer.exclude_from_weight_decay(var_names=list(exclude))
    optimizer.build(variables)
    if compiled:
        stacked = [tf.constant(np.stack(per_var), dtype=dtype) for per_var in zip(*grads)]

        @tf.function
        def loop():
            for t in tf.range(len(grads)):
                optimizer.apply_gradients(zip([g[t] for g in stacked], variables))

        loop()
    else:
        for gs in grads:
            optimizer.apply_gradients(zip([tf.constant(g, dtype=dtype) for g in gs], variables))
    return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables]


def assert_close(actual, expected, tol, what="", slack=None):
    """rtol=atol=tol per array; ``slack[i]`` (Lion's near ties): an elementwise allowance on top."""
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if slack is not None:
            # a near tie may take either sign: within its allowance the element counts as equal
            a = np.where(np.abs(a - e) <= tol + tol * np.abs(e) + slack[i], e, a)
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"{what} #{i}")


# A Lion direction within this many float32 ulps (2^-23) of 0, relative to its terms, is a near tie.
LION_TIE_ULPS = 16


def lion_near_ties(grads, beta_1=0.9, beta_2=0.99, clipnorm=None, global_clipnorm=None):
    """Per variable, per element: the number of steps whose Lion direction was a near tie.

    Lion's m and g do not depend on the params here, so this is float64 from the gradients:
    a near tie is ``|b1*m + (1-b1)*g| <= LION_TIE_ULPS * 2^-23 * (b1*M + (1-b1)*|g|)``, where
    ``M = b2*M + (1-b2)*|g|`` is the magnitude of what m sums (m's rounding error is relative
    to M, which cancellation may make far larger than |m|). Keras rounds ``1 - beta`` to
    float32 (1 - 0.99f is 8 ulps from 0.01), which moves its argument up to ~9 ulps of that
    magnitude from float64's, pyopt's up to ~3 (measured over 5 gradient sequences).
    """
    ms = [np.zeros(np.shape(g)) for g in grads[0]]
    magnitudes = [np.zeros(np.shape(g)) for g in grads[0]]
    ties = [np.zeros(np.shape(g), int) for g in grads[0]]
    for gs in grads:
        gs = [np.float64(np.float32(g)) for g in gs]  # the float32 gradients the optimizers get
        scale = reference.clip_scale(sum(float(np.sum(g * g)) for g in gs), global_clipnorm)
        for i, g in enumerate(gs):
            g = reference.clip_by_norm(g * scale, clipnorm)
            direction = beta_1 * ms[i] + (1 - beta_1) * g
            ties[i] += np.abs(direction) <= LION_TIE_ULPS * 2.0**-23 * (
                beta_1 * magnitudes[i] + (1 - beta_1) * np.abs(g)
            )
            ms[i] = beta_2 * ms[i] + (1 - beta_2) * g
            magnitudes[i] = beta_2 * magnitudes[i] + (1 - beta_2) * np.abs(g)
    return ties


def lion_slack(ties, lr, element_steps):
    """The allowance of Lion's near ties: 2*lr per near tie (a flip moves p by lr the other way;
    weight decay only shrinks the difference). Near ties must be rare (1 in 10^4 element-steps,
    plus one): elsewhere the tolerance stays that of the other rules."""
    count = sum(int(n.sum()) for n in ties)
    assert count <= 1 + element_steps // 10_000, f"{count} Lion near ties in {element_steps} element-steps"
    return [2 * lr * n for n in ties]


_KERAS_RESULTS: dict = {}  # Keras's trajectories, computed once for both backends


def compare_with_keras(
    rule, feature, backend, dtype="float32", steps=STEPS, shapes=SHAPES, seed=0, compiled=True, options=None
):
    """Runs pyopt's and Keras's ``rule`` with ``feature`` (and ``options``, more arguments of both),
    compares them; returns (initial values, Keras's variables)."""
    options = options or {}
    extra = {**FEATURES[feature], **options}
    mine, ref = make_pair(rule, backend, **extra)
    rng = np.random.default_rng(seed + 1)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, steps, seed, scale=3.0 * extra.get("loss_scale_factor", 1.0))
    exclude = ("v1", "v3") if "weight_decay" in extra else ()
    got = run(mine, init, grads, dtype, compiled=compiled, exclude=exclude)
    key = (rule, feature, dtype, steps, tuple(shapes), seed, compiled, tuple(sorted(options.items())))
    if key not in _KERAS_RESULTS:
        _KERAS_RESULTS[key] = run(ref, init, grads, dtype, compiled=compiled, exclude=exclude)
    want = _KERAS_RESULTS[key]
    slack = None
    if RULES[rule][0] == "Lion":
        kwargs = {**RULES[rule][1], **extra}
        assert set(extra) <= {"clipnorm", "global_clipnorm", "weight_decay"}, "lion_near_ties knows these options"
        ties = lion_near_ties(
            grads,
            *(kwargs.get(name, default) for name, default in (("beta_1", 0.9), ("beta_2", 0.99))),
            kwargs.get("clipnorm"),
            kwargs.get("global_clipnorm"),
        )
        slack = lion_slack(ties, kwargs["learning_rate"], steps * sum(int(np.prod(s)) for s in shapes))
    assert_close(got[0], want[0], TOL[dtype], f"{rule}/{feature} variable", slack=slack)
    assert_close(got[1], want[1], TOL[dtype], f"{rule}/{feature} optimizer variable")
    assert mine.last_backend == backend
    return init, want


# ---------------------------------------------------------------------------------------
# Numbers: the rules times the base-optimizer features, against Keras.


# Every feature with Adam and Nesterov momentum; the other old rules with the features that
# reach into their update (weight decay, global norm). The new rules: "weight_decay" leaves v1
# and v3 undecayed, so it runs the plain update too. Nadam (its running product advances once
# per update, also under accumulation) and RMSprop with both optional slots: every feature
# that reaches into the update (clipping by norm, weight decay, a schedule's lr,
# accumulation's t); clipvalue, EMA and loss scaling are Keras's passes around any rule's one
# call. Adagrad, Adamax, Lion: weight decay and global norm; AdamW: its default decay (plain)
# and global norm; the variants: weight decay; Adamax's bias correction under accumulation and
# a schedule, Lion's direction of clipped gradients.
UPDATE_FEATURES = ("clipnorm", "global_clipnorm", "weight_decay", "schedule", "accumulation")
TRAJECTORY_CASES = (
    [(rule, feature) for rule in ("adam", "nesterov") for feature in FEATURES]
    + [
        (rule, feature)
        for rule in ("adam_amsgrad", "momentum", "sgd")
        for feature in ("plain", "weight_decay", "global_clipnorm")
    ]
    + [(rule, feature) for rule in ("nadam", "rmsprop_centered_momentum") for feature in UPDATE_FEATURES]
    + [(rule, feature) for rule in ("adagrad", "adamax", "lion") for feature in ("weight_decay", "global_clipnorm")]
    + [("adamw", "plain"), ("adamw", "global_clipnorm")]
    + [(rule, "weight_decay") for rule in ("adagrad_initial", "rmsprop", "rmsprop_momentum", "rmsprop_centered")]
    + [("adamax", "accumulation"), ("adamax", "schedule"), ("lion", "clipnorm")]
)


@pytest.mark.parametrize("rule, feature", TRAJECTORY_CASES, ids=[f"{r}-{f}" for r, f in TRAJECTORY_CASES])
def test_trajectory_matches_keras(rule, feature, backend):
    compare_with_keras(rule, feature, backend)


@pytest.mark.parametrize("rule", list(RULES))
def test_single_eager_step_matches_keras(rule, backend):
    compare_with_keras(rule, "weight_decay", backend, steps=1, compiled=False)
    compare_with_keras(rule, "clipnorm", backend, steps=1, compiled=False)


FLOAT64_CASES = [  # (the reference's case, the optimizer, its arguments)
    ("adam", "Adam", dict(learning_rate=0.01, clipnorm=1.0, weight_decay=0.05)),
    ("adam_amsgrad", "Adam", dict(learning_rate=0.01, amsgrad=True, global_clipnorm=2.0)),
    ("momentum", "SGD", dict(learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("gradient_descent", "SGD", dict(learning_rate=0.01, global_clipnorm=2.0)),
    ("adamw", "AdamW", dict(learning_rate=0.01, clipnorm=1.0)),  # its default weight decay, 0.004
    ("adagrad", "Adagrad", dict(learning_rate=0.01, initial_accumulator_value=0.5, weight_decay=0.05)),
    ("rmsprop", "RMSprop", dict(learning_rate=0.01, rho=0.8, clipnorm=1.0)),
    (
        "rmsprop_centered_momentum",
        "RMSprop",
        dict(learning_rate=0.01, rho=0.8, momentum=0.5, centered=True, global_clipnorm=2.0, weight_decay=0.05),
    ),
    ("adamax", "Adamax", dict(learning_rate=0.01, beta_2=0.99, clipnorm=1.0, weight_decay=0.05)),
    ("nadam", "Nadam", dict(learning_rate=0.01, beta_1=0.8, global_clipnorm=2.0, weight_decay=0.05)),
    ("lion", "Lion", dict(learning_rate=0.001, beta_1=0.8, clipnorm=1.0, weight_decay=0.05)),
]
# Arguments of the optimizers that are no hyperparameters of the reference's update
NOT_HYPER = {"learning_rate", "clipnorm", "global_clipnorm", "weight_decay", "amsgrad", "centered"}


@pytest.mark.parametrize("case, name, kwargs", FLOAT64_CASES, ids=[case for case, _, _ in FLOAT64_CASES])
def test_float64_matches_numpy_reference(case, name, kwargs, backend):
    # Keras's float64 maths rounds its Python constants (1 - beta_1, ...) to float32, so float64
    # is checked against the NumPy float64 reference instead.
    optimizer = getattr(po, name)(**kwargs, backend=backend)
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = gradient_sequence(SHAPES, STEPS, seed=3)
    got = run(optimizer, params, grads, "float64", exclude=("v1", "v3"))
    lr = float(np.float32(kwargs["learning_rate"]))  # Keras keeps the learning rate in a float32 variable
    wd = kwargs.get("weight_decay", 0.004 if name == "AdamW" else 0.0)
    hyper = {k: v for k, v in kwargs.items() if k not in NOT_HYPER | {"initial_accumulator_value"}}
    hyper.update(
        lr=lr,
        clipnorm=kwargs.get("clipnorm"),
        global_clipnorm=kwargs.get("global_clipnorm"),
        weight_decay=[0.0 if i in (1, 3) else wd for i in range(len(SHAPES))],
    )
    # Keras's slots start at 0, Adagrad's accumulators at initial_accumulator_value
    start = kwargs.get("initial_accumulator_value", 0.0)
    slots = [tuple(np.full(s, start) for _ in reference.slot_names(case)) for s in SHAPES]
    takes_step = case.startswith(("adam", "nadam"))
    for t, gs in enumerate(grads, start=1):
        step_hyper = dict(hyper, step=t) if takes_step else dict(hyper)
        if case == "nadam":
            step_hyper["u_product"] = reference.nadam_u_product(t, kwargs["beta_1"])
        out = reference.step_multi(case, params, gs, slots, **step_hyper)
        params, slots = [o[0] for o in out], [o[1:] for o in out]
    assert_close(got[0], params, TOL["float64"], f"{case} float64")
    if case == "nadam":  # Keras's running product, in the variables' dtype
        np.testing.assert_allclose(optimizer._u_product.numpy(), reference.nadam_u_product(STEPS, 0.8), rtol=1e-13)
    assert optimizer.last_backend == backend


# Lion is in the single-step test only: Keras computes its direction in the 16-bit type, where
# near ties (see lion_near_ties) are frequent, each flip 2*lr. bfloat16: Keras casts the betas
# to the variable's type, where 0.999 is 1.0: its Adam's alpha = lr*sqrt(1 - 1^t)/... is 0 (the
# params never move) and its Nadam's v stays 0 (a step of 0/0). Those run with betas that
# bfloat16 holds exactly (else Keras's Nadam weights g by 1 - 0.99 = 0.0117 in bfloat16).
HALF_RULES = ("adam", "momentum", "sgd", "rmsprop_centered_momentum", "adamax", "nadam")
HALF_CASES = [(rule, "float16") for rule in HALF_RULES] + [
    (rule, "bfloat16") for rule in ("adam", "momentum", "sgd", "rmsprop_centered_momentum", "adamax", "nadam")
]


@pytest.mark.parametrize("rule, dtype", HALF_CASES)
def test_half_precision_matches_keras(rule, dtype, backend):
    # float16: 200 steps. bfloat16: 20; Keras does its maths in bfloat16 (8 bits of mantissa),
    # pyopt in float32 rounded once, and Keras's rounding drift grows with the steps.
    steps = STEPS if dtype == "float16" else 20
    degenerate = dtype == "bfloat16" and RULES[rule][0] in ("Adam", "Nadam")
    options = dict(beta_1=1 - 2**-3, beta_2=1 - 2**-7) if degenerate else {}
    shapes = [(), (7,), (100,)]
    init, want = compare_with_keras(rule, "plain", backend, dtype=dtype, steps=steps, shapes=shapes, options=options)
    # Keras's params moved beyond the tolerance: pyopt's could not match them by staying put
    tol = TOL[dtype]
    assert any(np.any(np.abs(np.float64(w) - x) > tol + tol * np.abs(np.float64(w))) for w, x in zip(want[0], init))


@pytest.mark.parametrize("accumulation", [None, 3], ids=["every_call", "accumulation"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_nadam_u_product_equals_keras_after_every_step(accumulation, compiled, backend):
    # Keras's Nadam multiplies _u_product by u_t = b1*(1 - 0.5*0.96^t) before each update (t:
    # the updates so far + 1), an input of the update. pyopt's equals it after every step, bit
    # for bit (the same float32 ops), and the float64 product u_1*...*u_t within rounding.
    shapes = [(), (7,)]
    grads = gradient_sequence(shapes, 9, seed=19)
    extra = dict(gradient_accumulation_steps=accumulation) if accumulation else {}

    def products_and_variables(optimizer):
        variables = [keras.Variable(np.ones(s), dtype="float32") for s in shapes]
        optimizer.build(variables)

        def apply(gs):
            optimizer.apply_gradients(zip(gs, variables))

        step = tf.function(apply) if compiled else apply
        products = []
        for gs in grads:
            step([tf.constant(g, tf.float32) for g in gs])
            products.append(optimizer._u_product.numpy())
        return products, [v.numpy() for v in variables]

    mine, ref = make_pair("nadam", backend, **extra)
    (got, got_variables), (want, want_variables) = products_and_variables(mine), products_and_variables(ref)
    np.testing.assert_array_equal(got, want)
    updates = [calls // (accumulation or 1) for calls in range(1, len(grads) + 1)]
    np.testing.assert_allclose(got, [reference.nadam_u_product(n) for n in updates], rtol=1e-6)
    assert_close(got_variables, want_variables, TOL["float32"])
    assert mine.last_backend == backend


HALF_ULP = {"float16": 2.0**-10, "bfloat16": 2.0**-7}  # relative spacing of the 16-bit types near 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("rule", ["adam_amsgrad", "nesterov", "sgd", *CLASS_RULES])
def test_half_precision_step_is_float32_maths_rounded_once(rule, dtype, backend):
    # pyopt updates 16-bit variables with float32 maths and one rounding: one step equals the
    # Keras float32 step on the same (16-bit) values, rounded to the 16-bit type (1 ulp).
    half = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    shapes = [(), (7,), (100,)]
    rng = np.random.default_rng(14)
    init = [rng.standard_normal(s).astype(half).astype(np.float64) for s in shapes]
    grads = [[g.astype(half).astype(np.float64) for g in gradient_sequence(shapes, 1, seed=15)[0]]]
    mine, ref = make_pair(rule, backend, weight_decay=0.1, clipnorm=2.0)
    got = run(mine, init, grads, dtype, compiled=False)[0]
    want = [np.asarray(x, np.float32).astype(half) for x in run(ref, init, grads, "float32", compiled=False)[0]]
    assert_close(got, want, HALF_ULP[dtype], f"{rule} {dtype} one step")


def test_fused_equals_tf_backend():
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    cases = [
        ("adam_amsgrad", "weight_decay"),
        ("nesterov", "global_clipnorm"),
        ("sgd", "clipnorm"),
        ("rmsprop_centered_momentum", "weight_decay"),
        ("adamax", "global_clipnorm"),
        ("nadam", "weight_decay"),
        ("lion", "global_clipnorm"),
    ]
    for rule, feature in cases:
        rng = np.random.default_rng(3)
        init = [rng.standard_normal(s) for s in SHAPES]
        grads = gradient_sequence(SHAPES, STEPS, seed=4)
        results = []
        for backend in ("fused", "tf"):
            optimizer, _ = make_pair(rule, backend, **FEATURES[feature])
            results.append(run(optimizer, init, grads, "float32", exclude=("v1",)))
            assert optimizer.last_backend == backend
        slack = None
        if rule == "lion":
            ties = lion_near_ties(grads, global_clipnorm=FEATURES[feature]["global_clipnorm"])
            slack = lion_slack(ties, RULES[rule][1]["learning_rate"], STEPS * sum(int(np.prod(s)) for s in SHAPES))
        assert_close(results[0][0], results[1][0], 1e-5, f"{rule}/{feature} fused vs tf", slack=slack)
        assert_close(results[0][1], results[1][1], 1e-5, f"{rule}/{feature} fused vs tf slots")


# ---------------------------------------------------------------------------------------
# The chapter's names, the lr alias, skip_nonfinite.


@pytest.mark.parametrize(
    "make_mine, make_keras",
    [
        (lambda b: po.GradientDescent(0.1, backend=b), lambda: keras.optimizers.SGD(0.1)),
        (
            lambda b: po.GradientDescent(lr=0.1, clipnorm=0.5, backend=b),
            lambda: keras.optimizers.SGD(0.1, clipnorm=0.5),
        ),
        (lambda b: po.Momentum(0.05, backend=b), lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
        (
            lambda b: po.Momentum(lr=0.05, beta=0.5, clipnorm=1.0, nesterov=True, backend=b),
            lambda: keras.optimizers.SGD(0.05, momentum=0.5, nesterov=True, clipnorm=1.0),
        ),
        (lambda b: po.Adam(lr=0.02, beta_1=0.8, backend=b), lambda: keras.optimizers.Adam(0.02, beta_1=0.8)),
        (lambda b: po.SGD(lr=0.02, momentum=0.7, backend=b), lambda: keras.optimizers.SGD(0.02, momentum=0.7)),
    ],
    ids=["gd", "gd_lr_clipnorm", "momentum_default_beta", "momentum_nesterov", "adam_lr", "sgd_lr"],
)
def test_chapter_names_and_lr_alias(make_mine, make_keras, backend):
    rng = np.random.default_rng(5)
    shapes = [(), (7,), (4, 3)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 30, seed=6)
    mine = make_mine(backend)
    assert_close(run(mine, init, grads, "float32")[0], run(make_keras(), init, grads, "float32")[0], TOL["float32"])
    assert mine.last_backend == backend


def test_chapter_names_are_the_right_rules():
    gd = po.GradientDescent(0.1)
    assert isinstance(gd, keras.optimizers.SGD) and gd.momentum == 0.0 and not gd.nesterov
    mom = po.Momentum(0.1)
    assert mom.momentum == mom.beta == 0.9 and not mom.nesterov
    assert po.Momentum(0.1, 0.5, 1.0, True).get_config()["beta"] == 0.5
    assert po.Momentum(0.1, 0.5, 1.0, True).clipnorm == 1.0
    assert isinstance(po.Adam(), keras.optimizers.Adam)
    assert float(po.Adam().learning_rate.numpy()) == pytest.approx(0.001)
    assert float(po.SGD().learning_rate.numpy()) == pytest.approx(0.01)
    assert float(po.Adam(lr=0.5).learning_rate.numpy()) == 0.5


# Arguments that make each class keep all its slots (RMSprop's optional ones, Adam's vhat)
SLOT_OPTIONS = {
    "Adam": dict(amsgrad=True),
    "SGD": dict(momentum=0.9),
    "Adagrad": dict(initial_accumulator_value=0.3),
    "RMSprop": dict(momentum=0.5, centered=True),
    "Adamax": {},
    "Nadam": {},
    "Lion": {},
    "AdamW": dict(amsgrad=True),
}


@pytest.mark.parametrize("name", list(SLOT_OPTIONS))
def test_class_is_the_keras_class_with_its_variables(name):
    # A subclass of the Keras built-in with its defaults, lr alias, and after build the same
    # optimizer variables (names, shapes, dtypes, initial values: Keras checkpoints restore).
    mine, ref = getattr(po, name)(**SLOT_OPTIONS[name]), getattr(keras.optimizers, name)(**SLOT_OPTIONS[name])
    assert isinstance(mine, type(ref)) and isinstance(mine, po.PyoptOptimizer)
    assert float(mine.learning_rate.numpy()) == float(ref.learning_rate.numpy())
    assert float(getattr(po, name)(lr=0.5).learning_rate.numpy()) == 0.5
    with pytest.raises(ValueError, match="learning_rate or as its alias lr, not both"):
        getattr(po, name)(0.1, lr=0.2)
    described = []
    for optimizer in (mine, ref):
        variables = [keras.Variable(np.ones((3, 2), "float32"), name="w"), keras.Variable(np.ones(2), name="b")]
        optimizer.build(variables)
        # Nadam's running product is unnamed: Keras numbers such names, "variable_<n>"
        names = [re.sub(r"^variable_\d+$", "variable", v.name) for v in optimizer.variables]
        described.append([(n, tuple(v.shape), v.dtype, v.numpy().tolist()) for n, v in zip(names, optimizer.variables)])
    assert described[0] == described[1]
    assert len(described[0]) > 2  # iterations, learning rate and the slots


@pytest.mark.parametrize("rule", ["adam_amsgrad", "momentum", "sgd", *CLASS_RULES])
def test_skip_nonfinite(rule, backend):
    shapes = [(), (7,), (33,)]
    rng = np.random.default_rng(7)
    variables = [keras.Variable(rng.standard_normal(s), dtype="float32") for s in shapes]
    good = gradient_sequence(shapes, 2, seed=8)
    nan_step = [g.copy() for g in good[1]]
    nan_step[2][5] = np.nan
    inf_step = [g.copy() for g in good[1]]
    inf_step[0] = np.array(-np.inf)
    name, kwargs = RULES[rule]
    optimizer = getattr(po, name)(**kwargs, clipnorm=1.0, skip_nonfinite=True, backend=backend)

    def apply(grads):
        optimizer.apply_gradients(zip([tf.constant(g, tf.float32) for g in grads], variables))
        # Everything but the counters: the iterations (every call counts, as in Keras) and
        # Nadam's running product u_1*...*u_t, which follows them.
        counters = (optimizer._iterations, getattr(optimizer, "_u_product", None))
        return [v.numpy() for v in variables] + [
            v.numpy() for v in optimizer.variables if not any(v is c for c in counters)
        ]

    before = apply(good[0])
    assert_close(apply(nan_step), before, 0.0, "NaN step changed state")
    assert_close(apply(inf_step), before, 0.0, "Inf step changed state")
    after = apply(good[1])
    assert not np.allclose(after[2], before[2]) and all(np.isfinite(x).all() for x in after)
    assert optimizer.last_backend == backend
    if name == "Nadam":  # t = 4 at the last step: the product of u_1..u_4
        np.testing.assert_allclose(optimizer._u_product.numpy(), reference.nadam_u_product(4), rtol=1e-6)


@pytest.mark.parametrize("rule", ["adam", "nesterov", "sgd", *CLASS_RULES])
def test_nan_propagates_by_default(rule, backend):
    shapes = [(), (7,), (33,)]
    init = [np.ones(s) for s in shapes]
    grads = gradient_sequence(shapes, 2, seed=8)
    grads[1][2][5] = np.nan
    mine, ref = make_pair(rule, backend)
    got, want = run(mine, init, grads, "float32", compiled=False), run(ref, init, grads, "float32", compiled=False)
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    assert np.isnan(got[0][2][5])


# ---------------------------------------------------------------------------------------
# Keras integration: model.fit, IndexedSlices, XLA, tf.distribute, one op call per step.


VOCABULARY = 100


def small_model(seed=0, embedding=False):
    keras.utils.set_random_seed(seed)
    if embedding:
        layers = [keras.Input((5,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 4), keras.layers.Flatten()]
    else:
        layers = [keras.Input((6,))]
    layers += [keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]
    return keras.Sequential(layers)


def fit_data(embedding=False, n=64, batch_size=16):
    rng = np.random.default_rng(11)
    if embedding:  # 5 tokens per sample, no token twice in a batch (see test_embedding_duplicate_rows)
        x = np.concatenate(
            [rng.permutation(VOCABULARY)[: 5 * batch_size].reshape(batch_size, 5) for _ in range(n // batch_size)]
        ).astype("int32")
    else:
        x = rng.standard_normal((n, 6)).astype("float32")
    return x, rng.standard_normal((n, 3)).astype("float32")


def fit_history(optimizer, *, embedding=False, jit_compile=False, epochs=2, run_eagerly=False):
    """``model.fit`` of ``small_model`` (4 steps an epoch): (final weights, loss of each epoch)."""
    x, y = fit_data(embedding)
    model = small_model(embedding=embedding)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile, run_eagerly=run_eagerly)
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights(), history.history["loss"]


def fit_weights(optimizer, **fit_kwargs):
    return fit_history(optimizer, **fit_kwargs)[0]


class NearTieCountingLion(keras.optimizers.Lion):
    """Keras's Lion, run eagerly, counting the near ties of its direction (``lion_near_ties``'s
    definition, from the m and g it sees) per variable element, and the step of the first."""

    def build(self, variables):
        super().build(variables)
        self.near_ties = [np.zeros(v.shape, int) for v in variables]
        self.magnitudes = [np.zeros(v.shape) for v in variables]
        self.first_near_tie = None

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        g, m = np.asarray(gradient, np.float64), np.asarray(self._momentums[i], np.float64)
        direction = self.beta_1 * m + (1 - self.beta_1) * g
        tie = np.abs(direction) <= LION_TIE_ULPS * 2.0**-23 * (
            self.beta_1 * self.magnitudes[i] + (1 - self.beta_1) * np.abs(g)
        )
        if tie.any() and self.first_near_tie is None:
            self.first_near_tie = int(self.iterations.numpy())
        self.near_ties[i] += tie
        self.magnitudes[i] = self.beta_2 * self.magnitudes[i] + (1 - self.beta_2) * np.abs(g)
        super().update_step(gradient, variable, learning_rate)


_KERAS_FITS: dict = {}


def keras_fit_weights(name, kwargs, **fit_kwargs):
    """``fit_weights`` with the Keras built-in ``name(**kwargs)``, computed once per session."""
    key = (name, tuple(sorted(kwargs.items())), tuple(sorted(fit_kwargs.items())))
    if key not in _KERAS_FITS:
        _KERAS_FITS[key] = fit_weights(getattr(keras.optimizers, name)(**kwargs), **fit_kwargs)
    return _KERAS_FITS[key]


FIT_CASES = {
    "adam": ("Adam", dict(learning_rate=0.01, weight_decay=0.01, clipnorm=1.0)),
    "nesterov": ("SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True, global_clipnorm=1.0)),
    "adagrad": ("Adagrad", dict(learning_rate=0.05, initial_accumulator_value=0.2, weight_decay=0.01)),
    "rmsprop": ("RMSprop", dict(learning_rate=0.005, rho=0.8, momentum=0.5, centered=True, clipnorm=1.0)),
    "adamax": ("Adamax", dict(learning_rate=0.01, global_clipnorm=1.0)),
    "nadam": ("Nadam", dict(learning_rate=0.01, weight_decay=0.01)),
    "lion": ("Lion", dict(learning_rate=0.001, weight_decay=0.01)),
    "adamw": ("AdamW", dict(learning_rate=0.01)),
}
FIT_EPOCHS = 3
_KERAS_HISTORIES: dict = {}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_model_fit_matches_keras(case, backend):
    # Same model, seed, data and batches: the weights and the loss of every epoch are Keras's.
    name, kwargs = FIT_CASES[case]
    if case not in _KERAS_HISTORIES:
        # Lion's reference runs eagerly, to count the near ties of its direction
        ref = NearTieCountingLion(**kwargs) if name == "Lion" else getattr(keras.optimizers, name)(**kwargs)
        _KERAS_HISTORIES[case] = ref, fit_history(ref, epochs=FIT_EPOCHS, run_eagerly=name == "Lion")
    ref, (want, want_losses) = _KERAS_HISTORIES[case]
    mine = getattr(po, name)(**kwargs, backend=backend)
    got, losses = fit_history(mine, epochs=FIT_EPOCHS)
    slack, compared_epochs = None, FIT_EPOCHS
    if name == "Lion":
        steps = 4 * FIT_EPOCHS
        slack = lion_slack(ref.near_ties, kwargs["learning_rate"], steps * sum(w.size for w in want))
        if ref.first_near_tie is not None:  # a flip there changes the later gradients, and losses
            compared_epochs = ref.first_near_tie // 4
    assert_close(got, want, 1e-5, f"{case} weights", slack=slack)
    np.testing.assert_allclose(losses[:compared_epochs], want_losses[:compared_epochs], rtol=1e-5, atol=1e-6)
    assert len(losses) == FIT_EPOCHS and losses[-1] < losses[0]
    assert mine.last_backend == backend
    if name == "Nadam":
        np.testing.assert_array_equal(mine._u_product.numpy(), ref._u_product.numpy())


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_embedding_indexed_slices(name, backend):
    # Embedding gradients are IndexedSlices; pyopt's default sparse step equals the densified one.
    # (Every rule's sparse op is checked against Keras's dense step below, without model.fit.)
    kwargs = dict(learning_rate=0.05, **(SLOT_OPTIONS[name] if name != "Adam" else {}))
    mine = getattr(po, name)(**kwargs, backend=backend)
    want = keras_fit_weights(name, kwargs, embedding=True, epochs=1)
    assert_close(fit_weights(mine, embedding=True, epochs=1), want, 1e-5)
    assert mine.last_backend == backend


@pytest.mark.parametrize("name", list(SLOT_OPTIONS))
def test_embedding_duplicate_rows(name, backend):
    # A row that appears twice in IndexedSlices gets the sum of its slices, as the dense
    # gradient does. (Keras's own Adam squares the slices before summing them, so its v
    # differs from pyopt's for such rows; SGD/momentum and unique rows agree with Keras.)
    kwargs = dict(learning_rate=0.1, **SLOT_OPTIONS[name])
    sparse = tf.IndexedSlices(
        tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), tf.constant([0, 2, 0]), tf.constant([4, 2])
    )
    results = []
    for grad, optimizer in [
        (sparse, getattr(po, name)(**kwargs, backend=backend)),
        (tf.convert_to_tensor(sparse), getattr(keras.optimizers, name)(**kwargs)),
    ]:
        variable = keras.Variable(np.ones((4, 2), "float32"))
        for _ in range(3):
            optimizer.apply_gradients([(grad, variable)])
        results.append(variable.numpy())
    assert_close([results[0]], [results[1]], TOL["float32"])


@pytest.mark.parametrize("name", list(SLOT_OPTIONS))
def test_lazy_moves_only_present_rows(name, backend):
    # lazy=True: rows absent from the IndexedSlices, and their slots, keep their exact values;
    # present rows get the dense rule applied to the summed slices.
    kwargs = dict(learning_rate=0.1, **SLOT_OPTIONS[name])
    sparse = tf.IndexedSlices(
        tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), tf.constant([0, 2, 0]), tf.constant([4, 2])
    )
    lazy = getattr(po, name)(**kwargs, backend=backend, lazy=True)
    assert lazy.get_config()["lazy"] is True
    variable = keras.Variable(np.ones((4, 2), "float32"))
    lazy.build([variable])
    slots = [slot for slot in lazy.variables if tuple(slot.shape) == (4, 2)]
    initial = [slot.numpy() for slot in slots]  # Adagrad's accumulators start at 0.3
    dense_rows = keras.Variable(np.ones((2, 2), "float32"))
    reference = getattr(keras.optimizers, name)(**kwargs)
    summed = tf.constant([[6.0, 8.0], [3.0, 4.0]])  # rows 0 and 2
    for _ in range(2):
        lazy.apply_gradients([(sparse, variable)])
        reference.apply_gradients([(summed, dense_rows)])
    got = variable.numpy()
    np.testing.assert_array_equal(got[[1, 3]], 1.0)
    assert_close([got[[0, 2]]], [dense_rows.numpy()], TOL["float32"])
    assert len(slots) == len(reference.variables) - 2 - (name == "Nadam")  # all but iterations, lr, u_product
    for slot, start in zip(slots, initial):
        np.testing.assert_array_equal(slot.numpy()[[1, 3]], start[[1, 3]])


def test_xla_uses_tf_path():
    # backend="auto" under XLA picks the pure-TF ops itself; results match Keras.
    mine = po.Adam(learning_rate=0.01, clipnorm=1.0)
    want = keras_fit_weights("Adam", dict(learning_rate=0.01, clipnorm=1.0), epochs=1)
    assert_close(fit_weights(mine, jit_compile=True, epochs=1), want, 1e-5)
    assert mine.last_backend == "tf"

    variables = [keras.Variable(np.ones(5, "float32"))]
    sgd = po.SGD(0.1, momentum=0.9)
    sgd.build(variables)
    tf.function(lambda g: sgd.apply_gradients([(g, variables[0])]), jit_compile=True)(tf.ones(5))
    assert sgd.last_backend == "tf"
    np.testing.assert_allclose(variables[0].numpy(), 0.9, rtol=1e-6)


def test_auto_picks_fused_when_available():
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    mine = po.Adam(0.01)
    fit_weights(mine, epochs=1)
    assert mine.last_backend == "fused"


def test_one_op_call_per_step(monkeypatch):
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from pyopt.ops import _fused

    model = small_model()
    x = tf.constant(np.random.default_rng(0).standard_normal((8, 6)), tf.float32)
    original = _fused.OpCall.__call__
    for rule, optimizer in [
        ("adam", po.Adam(0.01, weight_decay=0.1, global_clipnorm=1.0)),
        ("momentum", po.Momentum(0.01, clipnorm=1.0)),
        ("gradient_descent", po.GradientDescent(0.01)),
        ("adagrad", po.Adagrad(0.01, clipnorm=1.0)),
        ("rmsprop", po.RMSprop(0.01, momentum=0.5, centered=True, weight_decay=0.1)),
        ("adamax", po.Adamax(0.01, global_clipnorm=1.0)),
        ("nadam", po.Nadam(0.01, weight_decay=0.1)),
        ("lion", po.Lion(0.001, clipnorm=1.0)),
        ("adamw", po.AdamW(0.01)),
    ]:
        calls = []

        def counting(op_call, *args, calls=calls, **kwargs):
            calls.append((op_call.rule.name, len(op_call.variables)))
            return original(op_call, *args, **kwargs)

        monkeypatch.setattr(_fused.OpCall, "__call__", counting)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        assert calls == [(rule, 4)] * 3, f"{rule}: one call per step for all 4 variables"
        assert optimizer.last_backend == "fused"


@pytest.mark.parametrize(
    "clip",
    [dict(clipnorm=1.0), dict(global_clipnorm=2.0), dict(clipvalue=0.5)],
    ids=["clipnorm", "global_clipnorm", "clipvalue"],
)
@pytest.mark.parametrize("name", list(SLOT_OPTIONS))
def test_clip_gradients_called_directly_equals_keras(name, clip):
    # _clip_gradients is Keras's own: called directly it clips (the fused step does not call it).
    rng = np.random.default_rng(16)
    grads = [tf.constant(3.0 * rng.standard_normal(s), tf.float32) for s in [(), (7,), (4, 3)]]
    got = getattr(po, name)(**clip)._clip_gradients(grads)
    want = getattr(keras.optimizers, name)(**clip)._clip_gradients(grads)
    assert_close([g.numpy() for g in got], [w.numpy() for w in want], 1e-7, f"{name} {clip}")
    assert not np.allclose(got[2].numpy(), grads[2].numpy())


@pytest.mark.parametrize("name", list(SLOT_OPTIONS))
def test_apply_weight_decay_called_directly_equals_keras(name):
    results = []
    for optimizer in (getattr(po, name)(0.1, weight_decay=0.5), getattr(keras.optimizers, name)(0.1, weight_decay=0.5)):
        variables = [
            keras.Variable(np.full(3, 2.0, "float32"), name="decayed"),
            keras.Variable(np.full(3, 2.0, "float32"), name="excluded"),
        ]
        optimizer.exclude_from_weight_decay(var_names=["excluded"])
        optimizer._apply_weight_decay(variables)
        results.append([v.numpy() for v in variables])
    assert_close(results[0], results[1], 0.0)
    np.testing.assert_allclose(results[0][0], 2.0 - 2.0 * 0.5 * 0.1, rtol=1e-7)  # p = p - lr*wd*p


FUSED_STEP_CASES = [  # (the table's rule, the optimizer of make_pair, its options)
    ("adam", "adam", dict(weight_decay=0.1, global_clipnorm=1.0)),
    ("adam", "adam", dict(weight_decay=0.1, clipnorm=0.5)),
    ("momentum", "nesterov", dict(weight_decay=0.1, clipnorm=0.5)),
    ("gradient_descent", "sgd", dict(weight_decay=0.1, global_clipnorm=1.0)),
    ("rmsprop", "rmsprop_centered_momentum", dict(weight_decay=0.1, global_clipnorm=1.0)),
    ("nadam", "nadam", dict(weight_decay=0.1, clipnorm=0.5)),  # its own _fused_update
    ("adamw", "adamw", dict(global_clipnorm=1.0)),  # its default weight decay
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize(
    "table_rule, rule, kwargs", FUSED_STEP_CASES, ids=[f"{r}-{min(k)}" for _, r, k in FUSED_STEP_CASES]
)
def test_fused_step_clips_and_decays_inside_its_one_call(monkeypatch, table_rule, rule, kwargs, compiled, backend):
    # Outside a strategy a step is one pyopt.ops step, clipping and weight decay included: Keras's
    # separate _clip_gradients / _apply_weight_decay passes do not run, and the result is Keras's.
    from pyopt.ops._api import Step

    passes = []
    for method in ("_clip_gradients", "_apply_weight_decay"):
        keras_pass = getattr(keras.optimizers.Optimizer, method)
        monkeypatch.setattr(
            po.PyoptOptimizer, method, lambda self, arg, _m=method, _f=keras_pass: passes.append(_m) or _f(self, arg)
        )
    calls = []
    step_call = Step.__call__
    monkeypatch.setattr(
        Step, "__call__", lambda step, *a: calls.append((step.rule.name, len(step.variables))) or step_call(step, *a)
    )
    shapes = [(), (7,), (4, 3)]
    rng = np.random.default_rng(17)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 3, seed=18)
    mine, ref = make_pair(rule, backend, **kwargs)
    got = run(mine, init, grads, "float32", compiled=compiled, exclude=("v1",))
    # a tf.function traces the loop body once
    assert passes == [] and calls == [(table_rule, 3)] * (1 if compiled else 3)
    want = run(ref, init, grads, "float32", compiled=compiled, exclude=("v1",))
    assert_close(got[0], want[0], TOL["float32"], f"{rule} {kwargs} variable")
    assert_close(got[1], want[1], TOL["float32"], f"{rule} {kwargs} optimizer variable")
    assert mine.last_backend == backend


def test_clipvalue_and_strategy_steps_use_keras_passes(monkeypatch):
    # clipvalue stays Keras's own pass before the fused call; under a tf.distribute strategy
    # the whole step is Keras's (its clip and weight-decay passes, then update_step per variable).
    passes = []
    for method in ("_clip_gradients", "_apply_weight_decay"):
        keras_pass = getattr(keras.optimizers.Optimizer, method)
        monkeypatch.setattr(
            po.PyoptOptimizer, method, lambda self, arg, _m=method, _f=keras_pass: passes.append(_m) or _f(self, arg)
        )
    variable = keras.Variable(np.ones(3, "float32"))
    po.SGD(0.1, clipvalue=0.5, weight_decay=0.1).apply_gradients([(tf.constant([2.0, -2.0, 0.25]), variable)])
    assert passes == ["_clip_gradients"]
    np.testing.assert_allclose(variable.numpy(), [0.94, 1.04, 0.965], rtol=1e-6)  # p - lr*wd*p - lr*clip(g)
    passes.clear()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        optimizer = po.SGD(0.1, clipnorm=1.0, weight_decay=0.1)
        variable = keras.Variable(np.ones(3, "float32"))
    strategy.run(lambda: optimizer.apply_gradients([(tf.constant([2.0, -2.0, 1.0]), variable)]))
    assert passes == ["_clip_gradients", "_apply_weight_decay"]
    np.testing.assert_allclose(variable.numpy(), [0.99 - 0.1 * 2 / 3, 0.99 + 0.1 * 2 / 3, 0.99 - 0.1 / 3], rtol=1e-6)


@pytest.mark.parametrize(
    "make, op_type",
    [
        (lambda: po.Adam(0.01, amsgrad=True, weight_decay=0.1, global_clipnorm=1.0), "Pyopt>ApplyAdamMulti"),
        (lambda: po.SGD(0.01, momentum=0.9, weight_decay=0.1, clipnorm=1.0), "Pyopt>ApplyMomentumMulti"),
        (lambda: po.GradientDescent(0.01, clipnorm=1.0), "Pyopt>ApplyGradientDescentMulti"),
        (lambda: po.Adagrad(0.01, weight_decay=0.1, clipnorm=1.0), "Pyopt>ApplyAdagradMulti"),
        (
            lambda: po.RMSprop(0.01, momentum=0.5, centered=True, weight_decay=0.1, global_clipnorm=1.0),
            "Pyopt>ApplyRmspropMulti",
        ),
        (lambda: po.Adamax(0.01, weight_decay=0.1, clipnorm=1.0), "Pyopt>ApplyAdamaxMulti"),
        (lambda: po.Nadam(0.01, weight_decay=0.1, global_clipnorm=1.0), "Pyopt>ApplyNadamMulti"),
        (lambda: po.Lion(0.001, weight_decay=0.1, clipnorm=1.0), "Pyopt>ApplyLionMulti"),
        (lambda: po.AdamW(0.01, global_clipnorm=1.0), "Pyopt>ApplyAdamMulti"),  # Adam's op, its decay
    ],
    ids=["adam", "momentum", "gradient_descent", "adagrad", "rmsprop", "adamax", "nadam", "lion", "adamw"],
)
def test_traced_step_is_one_fused_op(make, op_type):
    # In a tf.function the whole update of a 4-variable model, weight decay and clipping
    # included, is one fused op; the only other variable writes are Keras's iteration counter
    # and, for Nadam, Keras's running product u_1*...*u_t (an input of the op).
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    model, optimizer = small_model(), make()

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    graph = step.get_concrete_function(tf.TensorSpec((None, 6), tf.float32)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count(op_type) == 1
    writes = [t for t in types if t.startswith(("Assign", "ResourceApply", "ResourceScatter"))]
    assert len(writes) == (2 if isinstance(optimizer, po.Nadam) else 1), writes
    assert optimizer.last_backend == "fused"


# update_step is the same for every rule but for its hyperparameters: Adam's step, RMSprop's
# optional slots, Nadam's running product (advanced by Keras's Nadam on this path)
STRATEGY_CASES = [
    ("Adam", dict(learning_rate=0.01, weight_decay=0.05, clipnorm=1.0)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True, weight_decay=0.05)),
    ("Nadam", dict(learning_rate=0.01, weight_decay=0.05, global_clipnorm=1.0)),
]


@pytest.mark.parametrize("name, kwargs", STRATEGY_CASES, ids=[name for name, _ in STRATEGY_CASES])
def test_distribute_strategy_per_variable_path(name, kwargs, backend):
    # Under a tf.distribute strategy Keras's per-variable path runs (clipping and weight decay
    # by Keras, update_step by pyopt.ops; Nadam's running product advanced by Keras's Nadam);
    # results still match the Keras built-in.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    shapes = [(), (7,), (4, 3)]
    rng = np.random.default_rng(12)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 20, seed=13)

    def train(make):
        with strategy.scope():
            optimizer = make()
            variables = [keras.Variable(x, dtype="float32") for x in init]
            optimizer.build(variables)

        @tf.function
        def step(gs):
            strategy.run(lambda g: optimizer.apply_gradients(zip(g, variables)), args=(gs,))

        for gs in grads:
            step([tf.constant(g, tf.float32) for g in gs])
        return optimizer, [v.numpy() for v in variables]

    mine, got = train(lambda: getattr(po, name)(**kwargs, backend=backend))
    ref, want = train(lambda: getattr(keras.optimizers, name)(**kwargs))
    assert_close(got, want, TOL["float32"], name)
    assert_close([v.numpy() for v in mine.variables], [v.numpy() for v in ref.variables], TOL["float32"], name)
    assert mine.last_backend == backend


# ---------------------------------------------------------------------------------------
# Arguments and config.


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: po.Adam(backend="cuda"), "backend"),
        (lambda: po.Adam(learning_rate=0.1, lr=0.1), "lr"),
        (lambda: po.SGD(0.1, lr=0.2), "lr"),
        (lambda: po.GradientDescent(-0.1), "learning_rate"),
        (lambda: po.Momentum(lr=float("nan")), "learning_rate"),
        (lambda: po.Adam(beta_1=1.0), "beta_1"),
        (lambda: po.Adam(beta_2=-0.1), "beta_2"),
        (lambda: po.Adam(epsilon=-1e-7), "epsilon"),
        (lambda: po.Adam(epsilon=0.0), r"epsilon must be a finite number > 0"),
        (lambda: po.SGD(momentum=1.5), re.escape("`momentum` must be a float between [0, 1].")),  # Keras's
        (lambda: po.SGD(momentum=float("nan")), r"momentum must be in \[0, 1\], got nan"),  # Keras takes NaN
        (lambda: po.Momentum(0.1, beta=-0.5), "beta"),
        (lambda: po.Adam(clipnorm=-1.0), "clipnorm"),
        (lambda: po.SGD(weight_decay=-0.1), "weight_decay"),
        (
            lambda: po.Adam(clipnorm=1.0, global_clipnorm=1.0),
            re.escape("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set."),
        ),  # Keras's
        (lambda: po.SGD(learning_rate=True), re.escape("Argument `learning_rate` should be float")),  # Keras's
        # The new classes' numbers, which Keras does not check (but Lion's beta_1)
        (lambda: po.Adagrad(-0.1), r"learning_rate must be a finite number >= 0, got -0\.1"),
        (lambda: po.Adagrad(initial_accumulator_value=-0.1), r"initial_accumulator_value must be .* >= 0, got -0\.1"),
        (lambda: po.Adagrad(initial_accumulator_value=float("nan")), "initial_accumulator_value"),
        (lambda: po.Adagrad(epsilon=0.0), r"epsilon must be a finite number > 0, got 0"),
        (lambda: po.RMSprop(rho=1.5), r"rho must be in \[0, 1\], got 1\.5"),
        (lambda: po.RMSprop(rho=-0.1), "rho"),
        (lambda: po.RMSprop(momentum=1.5), r"momentum must be in \[0, 1\], got 1\.5"),
        (lambda: po.RMSprop(momentum=float("nan")), r"momentum must be in \[0, 1\], got nan"),
        (lambda: po.RMSprop(epsilon=-1.0), "epsilon"),
        (lambda: po.Adamax(beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1"),
        (lambda: po.Adamax(beta_2=1.5), r"beta_2 must be in \[0, 1\], got 1\.5"),
        (lambda: po.Adamax(epsilon=0.0), "epsilon"),
        (lambda: po.Nadam(beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1"),
        (lambda: po.Nadam(beta_2=-0.1), "beta_2"),
        (lambda: po.Nadam(epsilon=float("nan")), "epsilon"),
        (lambda: po.Lion(beta_2=1.5), r"beta_2 must be in \[0, 1\], got 1\.5"),
        (lambda: po.Lion(lr=-0.1), "learning_rate"),
        (lambda: po.AdamW(weight_decay=-0.1), r"weight_decay must be a finite number >= 0, got -0\.1"),
        (lambda: po.AdamW(beta_1=1.0), "beta_1"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: po.Adam(beta_1="0.9"), "beta_1"),
        (lambda: po.Adam(amsgrad=1), "amsgrad"),
        (lambda: po.SGD(skip_nonfinite="yes"), "skip_nonfinite"),
        (lambda: po.RMSprop(centered=1), "centered must be a bool"),
        (lambda: po.RMSprop(rho="0.9"), "rho must be a real number"),
        (lambda: po.Adagrad(initial_accumulator_value="0.1"), "initial_accumulator_value"),
        (lambda: po.Nadam(beta_1="0.9"), "beta_1"),
        (lambda: po.Lion(beta_2=None), "beta_2"),
        (lambda: po.AdamW(amsgrad=1), "amsgrad"),
        (lambda: po.Adamax(lazy="no"), "lazy"),
    ],
)
def test_bad_argument_types_raise_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


KERAS_REFUSALS = [
    ("SGD", dict(momentum=-1.0)),
    ("SGD", dict(momentum=2.0)),
    ("SGD", dict(momentum=float("inf"))),
    ("SGD", dict(momentum="0.5")),
    ("SGD", dict(momentum=True)),
    ("SGD", dict(momentum=None)),
    ("SGD", dict(learning_rate=True)),
    ("Adam", dict(learning_rate="0.1")),
    ("Adam", dict(learning_rate=None)),
    ("Adam", dict(clipnorm=1.0, clipvalue=1.0)),
    ("SGD", dict(global_clipnorm=1.0, clipvalue=0.5)),
    ("Adam", dict(clipnorm=-1.0, global_clipnorm=1.0)),  # pyopt refuses clipnorm < 0 too; Keras's check is first
    ("Adam", dict(beta_1=2.0, clipnorm=1.0, clipvalue=1.0)),
    ("SGD", dict(momentum=5.0, weight_decay=-1.0)),
    ("Adam", dict(gradient_accumulation_steps=1)),
    ("Adam", dict(use_ema=True, ema_momentum=1.5)),
    ("SGD", dict(use_ema=True, ema_overwrite_frequency=2.5)),
    ("Adam", dict(betas=(0.9, 0.99))),
    ("Lion", dict(beta_1=0.0)),
    ("Lion", dict(beta_1=1.1)),
    ("Lion", dict(beta_1=-0.1, beta_2=5.0)),  # Keras's check of beta_1 is first
    ("AdamW", dict(weight_decay=None)),
    ("RMSprop", dict(learning_rate="0.1")),
    ("Adagrad", dict(clipnorm=1.0, global_clipnorm=1.0)),
    ("Adamax", dict(gradient_accumulation_steps=1)),
    ("Nadam", dict(use_ema=True, ema_momentum=-0.5)),
    ("RMSprop", dict(rho=0.9, nesterov=True)),  # an argument of SGD's, unknown to RMSprop
]


@pytest.mark.parametrize("name, kwargs", KERAS_REFUSALS, ids=[f"{n}-{k}" for n, k in KERAS_REFUSALS])
def test_keras_refusals_raise_keras_errors(name, kwargs):
    # What the Keras built-in refuses, pyopt refuses with the same exception type and message.
    with pytest.raises(Exception) as keras_error:
        getattr(keras.optimizers, name)(**kwargs)
    with pytest.raises(Exception) as pyopt_error:
        getattr(po, name)(**kwargs)
    assert type(pyopt_error.value) is type(keras_error.value)
    assert str(pyopt_error.value) == str(keras_error.value)


def test_ints_accepted_where_keras_takes_floats_only():
    sgd = po.SGD(1, momentum=1)  # Keras's SGD refuses both ints
    assert sgd.momentum == 1.0 and isinstance(sgd.momentum, float)
    assert float(sgd.learning_rate.numpy()) == 1.0
    assert isinstance(po.Adam(beta_1=0).beta_1, float)
    # the new classes keep their numbers as floats too (what the update call reads)
    rms, lion = po.RMSprop(1, rho=0, momentum=1, epsilon=1), po.Lion(1, beta_1=1, beta_2=0)
    assert [type(x) for x in (rms.rho, rms.momentum, rms.epsilon, lion.beta_1, lion.beta_2)] == [float] * 5
    assert float(rms.learning_rate.numpy()) == 1.0 and type(po.Nadam(beta_1=0).beta_1) is float


@pytest.mark.parametrize(
    "optimizer",
    [
        po.Adam(0.01, amsgrad=True, weight_decay=0.1, clipnorm=2.0, backend="tf", skip_nonfinite=True),
        po.Adam(learning_rate=_schedule(), use_ema=True, gradient_accumulation_steps=2),
        po.SGD(0.1, momentum=0.5, nesterov=True, global_clipnorm=1.0, backend="fused"),
        po.GradientDescent(lr=0.3, clipnorm=1.0, loss_scale_factor=8.0),
        po.Momentum(0.2, beta=0.8, clipvalue=0.1),
        po.Adagrad(0.05, initial_accumulator_value=0.3, epsilon=1e-6, weight_decay=0.01, backend="tf", lazy=True),
        po.RMSprop(0.01, rho=0.8, momentum=0.5, epsilon=1e-6, centered=True, global_clipnorm=1.0),
        po.Adamax(learning_rate=_schedule(), beta_1=0.8, beta_2=0.99, clipnorm=1.0, skip_nonfinite=True),
        po.Nadam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6, use_ema=True, backend="fused"),
        po.Lion(lr=0.001, beta_1=0.8, beta_2=0.9, weight_decay=0.1, gradient_accumulation_steps=2),
        po.AdamW(0.01, weight_decay=0.05, amsgrad=True, clipvalue=0.5),
        po.AdamW(),  # its default weight decay
    ],
    ids=[
        "adam",
        "adam_schedule",
        "sgd",
        "gradient_descent",
        "momentum",
        "adagrad",
        "rmsprop",
        "adamax_schedule",
        "nadam",
        "lion",
        "adamw",
        "adamw_default",
    ],
)
def test_config_round_trip(optimizer):
    config = optimizer.get_config()
    assert config["backend"] == optimizer.backend
    again = type(optimizer).from_config(copy.deepcopy(config))  # Keras's from_config edits its argument
    assert type(again) is type(optimizer)
    assert again.get_config() == config
    # Through Keras's own serialization (registered as "pyopt>ClassName").
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer) and restored.get_config() == config


@pytest.mark.parametrize("name", list(SLOT_OPTIONS))
def test_keras_config_keys_are_kept(name):
    # The drop-ins report every key the Keras built-ins report, with the same defaults, plus
    # backend, skip_nonfinite and lazy.
    for mine, ref in [
        (getattr(po, name)(), getattr(keras.optimizers, name)()),
        (getattr(po, name)(**SLOT_OPTIONS[name]), getattr(keras.optimizers, name)(**SLOT_OPTIONS[name])),
    ]:
        extra = set(mine.get_config()) - set(ref.get_config())
        assert extra == {"backend", "skip_nonfinite", "lazy"}
        for key, value in ref.get_config().items():
            if key != "name":
                assert mine.get_config()[key] == value, key
