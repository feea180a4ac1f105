"""The public functions of pyopt.kernels and pyopt.ops, made from the rule table (pyopt._rules):
each rule has them in both modules, with the signatures written out below (independent of the
generator), a docstring stating the rule's formula and a TypeError naming the function for a
call that does not fit the signature."""

import importlib
import inspect

import pytest

from pyopt._rules import RULES

E = inspect.Parameter.empty
POS, KW = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY

# (name, kind, default) of every parameter, as the hand-written functions had them.
_GD = [("lr", KW, E)]
_MOMENTUM = [("lr", KW, E), ("momentum", KW, E), ("nesterov", KW, False)]
_ADAM = [("lr", KW, E), ("beta_1", KW, 0.9), ("beta_2", KW, 0.999), ("epsilon", KW, 1e-7), ("step", KW, E)]
_ADAGRAD = [("lr", KW, E), ("epsilon", KW, 1e-7)]
_RMSPROP = [("lr", KW, E), ("rho", KW, 0.9), ("momentum", KW, 0.0), ("epsilon", KW, 1e-7)]
_NADAM = _ADAM + [("u_product", KW, E)]
_LION = [("lr", KW, E), ("beta_1", KW, 0.9), ("beta_2", KW, 0.99)]
_KERNEL_OPTIONS = [("clipnorm", KW, None), ("weight_decay", KW, 0.0), ("skip_nonfinite", KW, False)]
_KERNEL_MULTI_OPTIONS = [
    ("clipnorm", KW, None),
    ("global_clipnorm", KW, None),
    ("weight_decay", KW, 0.0),
    ("skip_nonfinite", KW, False),
]
_KERNEL_SPARSE_OPTIONS = [
    ("clipnorm", KW, None),
    ("weight_decay", KW, 0.0),
    ("lazy", KW, False),
    ("skip_nonfinite", KW, False),
]
_OPS_MULTI_OPTIONS = [
    ("weight_decay", KW, 0.0),
    ("clipnorm", KW, None),
    ("global_clipnorm", KW, None),
    ("skip_nonfinite", KW, False),
    ("use_locking", KW, True),
    ("backend", KW, "auto"),
    ("lazy", KW, False),
]
_OPS_OPTIONS = [
    ("weight_decay", KW, 0.0),
    ("clipnorm", KW, None),
    ("use_locking", KW, True),
    ("backend", KW, "auto"),
    ("lazy", KW, False),
]


def _pos(*names):
    return [(name, POS, E) for name in names]


def _kw(*names):
    """Optional slots: keyword-only, None (not given) by default."""
    return [(name, KW, None) for name in names]


def _wd(options, weight_decay):
    """``options`` with another weight_decay default (AdamW's)."""
    return [(n, k, weight_decay if n == "weight_decay" else d) for n, k, d in options]


KERNELS = {
    "gradient_descent": _pos("param", "grad") + _GD + _KERNEL_OPTIONS,
    "gradient_descent_multi": _pos("params", "grads") + _GD + _KERNEL_MULTI_OPTIONS,
    "gradient_descent_sparse": _pos("param", "values", "indices") + _GD + _KERNEL_SPARSE_OPTIONS,
    "momentum": _pos("param", "grad", "velocity") + _MOMENTUM + _KERNEL_OPTIONS,
    "momentum_multi": _pos("params", "grads", "velocities") + _MOMENTUM + _KERNEL_MULTI_OPTIONS,
    "momentum_sparse": _pos("param", "values", "indices", "velocity") + _MOMENTUM + _KERNEL_SPARSE_OPTIONS,
    "adam": _pos("param", "grad", "m", "v") + _ADAM + [("vhat", KW, None)] + _KERNEL_OPTIONS,
    "adam_multi": _pos("params", "grads", "ms", "vs") + _ADAM + [("vhats", KW, None)] + _KERNEL_MULTI_OPTIONS,
    "adam_sparse": _pos("param", "values", "indices", "m", "v") + _ADAM + [("vhat", KW, None)] + _KERNEL_SPARSE_OPTIONS,
    "adagrad": _pos("param", "grad", "accumulator") + _ADAGRAD + _KERNEL_OPTIONS,
    "adagrad_multi": _pos("params", "grads", "accumulators") + _ADAGRAD + _KERNEL_MULTI_OPTIONS,
    "adagrad_sparse": _pos("param", "values", "indices", "accumulator") + _ADAGRAD + _KERNEL_SPARSE_OPTIONS,
    "rmsprop": _pos("param", "grad", "velocity")
    + _RMSPROP
    + _kw("momentum_buffer", "average_gradient")
    + _KERNEL_OPTIONS,
    "rmsprop_multi": _pos("params", "grads", "velocities")
    + _RMSPROP
    + _kw("momentum_buffers", "average_gradients")
    + _KERNEL_MULTI_OPTIONS,
    "rmsprop_sparse": _pos("param", "values", "indices", "velocity")
    + _RMSPROP
    + _kw("momentum_buffer", "average_gradient")
    + _KERNEL_SPARSE_OPTIONS,
    "adamax": _pos("param", "grad", "m", "u") + _ADAM + _KERNEL_OPTIONS,
    "adamax_multi": _pos("params", "grads", "ms", "us") + _ADAM + _KERNEL_MULTI_OPTIONS,
    "adamax_sparse": _pos("param", "values", "indices", "m", "u") + _ADAM + _KERNEL_SPARSE_OPTIONS,
    "nadam": _pos("param", "grad", "m", "v") + _NADAM + _KERNEL_OPTIONS,
    "nadam_multi": _pos("params", "grads", "ms", "vs") + _NADAM + _KERNEL_MULTI_OPTIONS,
    "nadam_sparse": _pos("param", "values", "indices", "m", "v") + _NADAM + _KERNEL_SPARSE_OPTIONS,
    "lion": _pos("param", "grad", "m") + _LION + _KERNEL_OPTIONS,
    "lion_multi": _pos("params", "grads", "ms") + _LION + _KERNEL_MULTI_OPTIONS,
    "lion_sparse": _pos("param", "values", "indices", "m") + _LION + _KERNEL_SPARSE_OPTIONS,
    "adamw": _pos("param", "grad", "m", "v") + _ADAM + [("vhat", KW, None)] + _wd(_KERNEL_OPTIONS, 0.004),
    "adamw_multi": _pos("params", "grads", "ms", "vs")
    + _ADAM
    + [("vhats", KW, None)]
    + _wd(_KERNEL_MULTI_OPTIONS, 0.004),
    "adamw_sparse": _pos("param", "values", "indices", "m", "v")
    + _ADAM
    + [("vhat", KW, None)]
    + _wd(_KERNEL_SPARSE_OPTIONS, 0.004),
}
OPS = {
    "gradient_descent": _pos("variable", "grad") + _GD + _OPS_OPTIONS,
    "gradient_descent_multi": _pos("variables", "grads") + _GD + _OPS_MULTI_OPTIONS,
    "momentum": _pos("variable", "grad", "velocity") + _MOMENTUM + _OPS_OPTIONS,
    "momentum_multi": _pos("variables", "grads", "velocities") + _MOMENTUM + _OPS_MULTI_OPTIONS,
    "adam": _pos("variable", "grad", "m", "v") + _ADAM + [("vhat", KW, None)] + _OPS_OPTIONS,
    "adam_multi": _pos("variables", "grads", "ms", "vs") + _ADAM + [("vhats", KW, None)] + _OPS_MULTI_OPTIONS,
    "adagrad": _pos("variable", "grad", "accumulator") + _ADAGRAD + _OPS_OPTIONS,
    "adagrad_multi": _pos("variables", "grads", "accumulators") + _ADAGRAD + _OPS_MULTI_OPTIONS,
    "rmsprop": _pos("variable", "grad", "velocity")
    + _RMSPROP
    + _kw("momentum_buffer", "average_gradient")
    + _OPS_OPTIONS,
    "rmsprop_multi": _pos("variables", "grads", "velocities")
    + _RMSPROP
    + _kw("momentum_buffers", "average_gradients")
    + _OPS_MULTI_OPTIONS,
    "adamax": _pos("variable", "grad", "m", "u") + _ADAM + _OPS_OPTIONS,
    "adamax_multi": _pos("variables", "grads", "ms", "us") + _ADAM + _OPS_MULTI_OPTIONS,
    "nadam": _pos("variable", "grad", "m", "v") + _NADAM + _OPS_OPTIONS,
    "nadam_multi": _pos("variables", "grads", "ms", "vs") + _NADAM + _OPS_MULTI_OPTIONS,
    "lion": _pos("variable", "grad", "m") + _LION + _OPS_OPTIONS,
    "lion_multi": _pos("variables", "grads", "ms") + _LION + _OPS_MULTI_OPTIONS,
    "adamw": _pos("variable", "grad", "m", "v") + _ADAM + [("vhat", KW, None)] + _wd(_OPS_OPTIONS, 0.004),
    "adamw_multi": _pos("variables", "grads", "ms", "vs")
    + _ADAM
    + [("vhats", KW, None)]
    + _wd(_OPS_MULTI_OPTIONS, 0.004),
}
# A line of each rule's formula, as its docstrings state it.
FORMULA = {
    "gradient_descent": "p = p - lr*wd*p - lr*g",
    "momentum": "p = p - lr*wd*p + momentum*m - lr*g",
    "adam": "alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)",
    "adagrad": "p = p - lr*wd*p - lr*g / sqrt(acc + epsilon)",
    "rmsprop": "a = rho*a + (1 - rho)*g",
    "adamax": "u = max(beta_2*u, |g|)",
    "nadam": "m_hat = u_next*m / (1 - u_product*u_next) + (1 - u_t)*g / (1 - u_product)",
    "lion": "p = p - lr*wd*p - lr * sign(beta_1*m + (1 - beta_1)*g)",
    "adamw": "p = p - lr*wd*p - alpha * m / (sqrt(v or vhat) + epsilon)",
}
FORMS = {"kernels": ("", "_multi", "_sparse"), "ops": ("", "_multi")}


def _module(front_end):
    if front_end == "ops":
        pytest.importorskip("tensorflow")
    return importlib.import_module(f"pyopt.{front_end}")


def _functions():
    return [
        (front_end, rule.name + suffix)
        for front_end, forms in FORMS.items()
        for rule in RULES.values()
        for suffix in forms
    ]


def test_the_expected_tables_cover_the_rule_table():
    assert set(FORMULA) == set(RULES)
    assert sorted(KERNELS) == sorted(name for front_end, name in _functions() if front_end == "kernels")
    assert sorted(OPS) == sorted(name for front_end, name in _functions() if front_end == "ops")


@pytest.mark.parametrize("front_end, name", _functions())
def test_every_rule_has_its_functions(front_end, name):
    module = _module(front_end)
    function = getattr(module, name)
    assert name in module.__all__
    assert (function.__name__, function.__qualname__, function.__module__) == (name, name, f"pyopt.{front_end}")
    expected = {"kernels": KERNELS, "ops": OPS}[front_end][name]
    params = inspect.signature(function).parameters.values()
    assert [(p.name, p.kind, p.default) for p in params] == expected


@pytest.mark.parametrize("front_end, name", _functions())
def test_docstrings_state_the_formula(front_end, name):
    function = getattr(_module(front_end), name)
    rule = next(rule for rule in RULES.values() if name in (rule.name, rule.name + "_multi", rule.name + "_sparse"))
    assert FORMULA[rule.name] in function.__doc__
    assert all(line in function.__doc__ for line in rule.formula.splitlines())
    assert rule.name in inspect.getdoc(function) or rule.title in function.__doc__


@pytest.mark.parametrize("front_end, name", _functions())
def test_a_call_that_does_not_fit_names_the_function(front_end, name):
    function = getattr(_module(front_end), name)
    expected = {"kernels": KERNELS, "ops": OPS}[front_end][name]
    arrays = [[] for _, kind, _ in expected if kind is POS]
    required = {p: 1 for p, kind, default in expected if kind is KW and default is E}
    n = len(arrays)
    with pytest.raises(TypeError, match=rf"^{name}\(\) takes {n} positional arguments but {n + 1} were given$"):
        function(*arrays, [], **required)
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'nope'$"):
        function(*arrays, **required, nope=1)
    first = expected[0][0]
    with pytest.raises(TypeError, match=rf"^{name}\(\) got multiple values for argument '{first}'$"):
        function(*arrays, **required, **{first: []})
    with pytest.raises(TypeError, match=rf"^{name}\(\) missing \d+ required arguments?: 'lr'"):
        function(*arrays)
