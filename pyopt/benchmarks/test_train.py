"""Whole train steps (forward, backward, update) on a fixed batch, every applicable implementation.

- ``mlp_13_4_1``: the chapter's MLP (13 -> 4 relu -> 1) on a batch of 32 standardised Boston
  housing rows, MSE loss.
- ``mlp_10M``: 1024 -> 4096 -> 1280 -> 256 -> 1 (relu), 9.8M parameters, batch 32, random data.

The model is the same plain-variable MLP for every TensorFlow implementation (only the
optimizer differs) and the same maths in torch. ``keras_xla`` compiles the whole step with
XLA (what ``model.fit`` does by default in Keras 3 on TensorFlow). The first step is
checked against a float64 reference of the update computed from the gradients at the
initial parameters.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from .implementations import IMPLEMENTATIONS, tf_sample, tf_variables, torch_form, torch_module, torch_optimizer
from .plugin import build_or_skip, selected
from .workloads import FIRST_RULES, Workload, WorkloadData, check_first_step

BATCH = 32
MODELS = {"mlp_13_4_1": (13, 4, 1), "mlp_10M": (1024, 4096, 1280, 256, 1)}
TRAIN_IMPLS = ("pyopt_op", "pyopt_keras", "pyopt_tf", "keras", "keras_xla", "chapter", "tf_raw", "torch")


def train_cases(quick: bool) -> list:
    if quick:
        return [("mlp_13_4_1", "adam")]
    return [("mlp_13_4_1", r) for r in FIRST_RULES] + [("mlp_10M", "adam")]


def pytest_generate_tests(metafunc):
    if "train_case" not in metafunc.fixturenames:
        return
    params = [
        (m, r, i)
        for m, r in train_cases(metafunc.config.getoption("quick"))
        for i in selected(metafunc.config, TRAIN_IMPLS)
    ]
    metafunc.parametrize("train_case", params, ids=[f"{r}-train_{m}-{i}" for m, r, i in params])


def _batch(model):
    if model == "mlp_13_4_1":
        from pyopt.data import boston_housing

        (x, y), _ = boston_housing.load_data(dtype="float32", targets_as_columns=True)
        x = (x - x.mean(axis=0)) / x.std(axis=0)
        return x[:BATCH].copy(), y[:BATCH].copy()
    rng = np.random.default_rng(2)
    return rng.standard_normal((BATCH, MODELS[model][0]), dtype=np.float32), rng.standard_normal(
        (BATCH, 1), dtype=np.float32
    )


def _init_params(model):
    rng = np.random.default_rng(3)
    params = []
    sizes = MODELS[model]
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform, zero biases
        params += [rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32), np.zeros(fan_out, np.float32)]
    return params


def tf_loss(params, x, y):
    import tensorflow as tf

    h = x
    for k in range(0, len(params), 2):
        h = tf.matmul(h, params[k]) + params[k + 1]
        if k + 2 < len(params):
            h = tf.nn.relu(h)
    return tf.reduce_mean(tf.square(h - y))


@lru_cache(maxsize=1)
def train_data(model) -> tuple:
    """(WorkloadData with the initial parameters and their gradients on the batch, x, y)."""
    import tensorflow as tf

    x, y = _batch(model)
    params = _init_params(model)
    variables = [tf.Variable(p) for p in params]
    with tf.GradientTape() as tape:
        loss = tf_loss(variables, x, y)
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    workload = Workload(f"train_{model}", "train", tuple(p.shape for p in params))
    return WorkloadData(workload, params=params, grads=grads), x, y


def _tf_train_runner(impl, rule, data, x, y):
    import tensorflow as tf

    impl.check(data.workload)
    variables = tf_variables(data.params, impl.keras_variables)
    apply = impl.updater(rule, None, variables)
    x, y = tf.constant(x), tf.constant(y)

    def step():
        with tf.GradientTape() as tape:
            loss = tf_loss(variables, x, y)
        apply(tape.gradient(loss, variables))
        return loss

    return impl.function(step), tf_sample(variables)


def _torch_train_runner(rule, data, x, y):
    torch = torch_module()
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in data.params]
    opt = torch_optimizer(rule, params)
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        h = x
        for k in range(0, len(params), 2):
            h = h @ params[k] + params[k + 1]
            if k + 2 < len(params):
                h = torch.relu(h)
        loss = torch.mean((h - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sample(positions):
        return np.array([float(params[t].detach().reshape(-1)[i]) for t, i in positions])

    return step, sample


def test_train(train_case, timed, benchmark):
    model, rule, name = train_case
    impl = IMPLEMENTATIONS[name]
    benchmark.group = f"{rule} train_{model}"
    data, x, y = train_data(model)
    t0 = time.perf_counter()

    def build():
        if name == "torch":
            return _torch_train_runner(rule, data, x, y)
        return _tf_train_runner(impl, rule, data, x, y)

    step, sample = build_or_skip(build)
    step()
    first_step_s = time.perf_counter() - t0
    form = torch_form(rule) if name == "torch" else "keras"
    rel_err = check_first_step(data, rule, None, sample(data.positions()), form=form)
    workload = data.workload
    timed(
        step,
        impl=name,
        label=impl.label,
        rule=rule,
        clip=None,
        workload=workload.name,
        kind="train",
        dtype="float32",
        n_tensors=workload.n_tensors,
        n_elements=workload.n_elements,
        bytes_per_step=workload.bytes_per_step(rule),
        first_step_s=first_step_s,
        check_rel_err=rel_err,
        train=True,
    )
