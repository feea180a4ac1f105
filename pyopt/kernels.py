"""In-place optimizer update rules on NumPy arrays, backed by pyopt's C++ core.

Every function updates ``param`` and its slots **in place**, in one fused pass per
tensor (plus one read pass over the gradient when clipping), multi-threaded for large
arrays, with the GIL released. Supported dtypes: float32, float64, and float16 /
bfloat16 (``ml_dtypes``) with the maths done in float32. All arrays of a call share one
dtype, are C-contiguous, and the updated ones are writeable and do not overlap anything.
Invalid input raises ``TypeError``/``ValueError`` naming the argument before any array
is touched. Hyperparameters are real numbers (Python or NumPy scalars; not bool), ``step``
an int, the flags (``nesterov``, ``skip_nonfinite``, ``lazy``) bool or ``numpy.bool_``.

Clipping (Keras semantics): ``clipnorm=c`` scales each gradient by ``c / max(||g||, c)``
with its own L2 norm; the ``*_multi`` forms also take ``global_clipnorm=c`` which uses
the norm over all gradients of the call. ``weight_decay=wd`` is decoupled (AdamW-style,
as Keras 3): ``p -= lr * wd * p`` before the update. ``skip_nonfinite=True`` leaves every
array untouched when any gradient holds NaN/Inf and returns False.

Each function returns True when the step was applied.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np

from . import _rules, _signatures
from ._config import core as _load_core
from ._rules import RULES

_core = _load_core()
# Each rule's _core functions: (dense, sparse).
_CORE = {rule.name: (getattr(_core, rule.core), getattr(_core, rule.core_sparse)) for rule in RULES.values()}

WeightDecay = float | Sequence[float]


def _list(arrays, name: str) -> list:
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{name} must be a list of numpy arrays, got {type(arrays).__name__}")
    return list(arrays)


# --- Checks and the core call ------------------------------------------------------------
# Every hyperparameter and option is checked here by the rule table (pyopt._rules) before the
# core is called, so that a wrong type raises "lr must be a real number, got str: '0.1'"
# instead of pybind11's "incompatible function arguments" dump of the whole signature, and
# a value out of range the core's words. bool is not a number (lr=True is a mistake); the
# flags take bool or numpy.bool_. Arrays (dtypes, shapes, counts, overlaps) are the core's.


def _weight_decay(value):
    """A number, or one per tensor (list, tuple or 1-d array); the core checks the count."""
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [_rules.check(_rules.WEIGHT_DECAY, w, name=f"weight_decay[{i}]") for i, w in enumerate(value)]
    return _rules.check(_rules.WEIGHT_DECAY, value, what="a real number or a list of real numbers")


def _clip(param, value):
    return None if value is None else _rules.check(param, value, what="a real number or None")


def _step(
    rule,
    arrays: list,
    hyper: dict,
    flags: dict,
    *,
    weight_decay,
    clipnorm,
    global_clipnorm=None,
    skip_nonfinite,
    lazy=None,
    sparse=False,
) -> bool:
    """One call of the rule's _core function (``sparse``: its row-sparse one, with ``lazy``):
    ``arrays`` positional, the hyperparameters (read by name from ``hyper``), flags and options
    checked, by keyword."""
    kwargs = {param.name: _rules.check(param, hyper[param.name]) for param in rule.params}
    kwargs.update((name, _rules.check_flag(name, value)) for name, value in flags.items())
    kwargs.update(
        weight_decay=_weight_decay(weight_decay),
        clipnorm=_clip(_rules.CLIPNORM, clipnorm),
        skip_nonfinite=_rules.check_flag("skip_nonfinite", skip_nonfinite),
    )
    if sparse:
        kwargs["lazy"] = _rules.check_flag("lazy", lazy)
    else:
        kwargs["global_clipnorm"] = _clip(_rules.GLOBAL_CLIPNORM, global_clipnorm)
    return _CORE[rule.name][sparse](*arrays, **kwargs)


# --- Row-sparse gradients -------------------------------------------------------------
# `values[k]` is the gradient of row `indices[k]` of `param` (shape (nnz,) + param.shape[1:]),
# as in tf.IndexedSlices. Duplicate indices are summed. By default the step equals the dense
# step with the densified gradient (Keras semantics: slots of absent rows decay, weight decay
# applies to all rows); ``lazy=True`` moves only the rows present (lazy Adam). Out-of-range
# indices raise ValueError before anything is written.


# --- The public functions, made from the rule table ----------------------------------------
# Each rule of pyopt._rules.RULES gives <rule>, <rule>_multi and <rule>_sparse: the signature
# and docstring come from its row, so a new row needs no edit here.

_P = inspect.Parameter
_FORMS = {"single": "", "multi": "_multi", "sparse": "_sparse"}
_OPTIONS_DOC = {
    "clipnorm": "clip each gradient by its own L2 norm: ``g = g * c / max(||g||_2, c)``",
    "global_clipnorm": "clip all gradients by their joint norm: ``g = g * c / max(sqrt(sum_i ||g_i||^2), c)``",
    "weight_decay": "decoupled weight decay ``p = p - lr*wd*p`` before the update",
    "lazy": "move only the rows present (lazy Adam); False: the dense step with the densified gradient",
    "skip_nonfinite": "leave every array untouched and return False when a gradient holds NaN/Inf",
}


def _signature(rule, form: str) -> inspect.Signature:
    """The arrays (positional), then keyword-only: the hyperparameters (a default of None in the
    row: required), the flags, the optional slots and the options of ``form``. The sparse
    functions carry no annotations, as they never did."""
    multi = form == "multi"

    def ann(text):
        return _P.empty if form == "sparse" else text

    array = "Sequence[np.ndarray]" if multi else "np.ndarray"
    arrays = {"single": ["param", "grad"], "multi": ["params", "grads"], "sparse": ["param", "values", "indices"]}[form]
    arrays += [slot.list if multi else slot.name for slot in rule.required_slots]
    params = [_P(name, _P.POSITIONAL_OR_KEYWORD, annotation=ann(array)) for name in arrays]
    params += _signatures.rule_parameters(rule, _slot_name(form), ann(f"{array} | None"), annotate=form != "sparse")
    options = [("clipnorm", None, "float | None")]
    if multi:
        options.append(("global_clipnorm", None, "float | None"))
    options.append(("weight_decay", rule.weight_decay, "WeightDecay" if multi else "float"))
    if form == "sparse":
        options.append(("lazy", False, "bool"))
    options.append(("skip_nonfinite", False, "bool"))
    params += [_P(name, _P.KEYWORD_ONLY, default=default, annotation=ann(a)) for name, default, a in options]
    return inspect.Signature(params, return_annotation=ann("bool"))


def _slot_name(form: str):
    """A slot's argument: its list name in the ``*_multi`` functions ("ms"), else its name ("m")."""
    return (lambda slot: slot.list) if form == "multi" else (lambda slot: slot.name)


def _doc(rule, form: str, sig: inspect.Signature) -> str:
    slots = "".join(f", ``{slot.name}``" for slot in rule.required_slots)
    slots += "".join(f" (and ``{slot.name}``)" for slot in rule.slots if slot.optional)
    first = {
        "single": f"{rule.title}, in place on ``param``{slots}.",
        "multi": f":func:`{rule.name}` on every ``(params[i], grads[i])`` and their slots in one call.",
        "sparse": f":func:`{rule.name}` with a row-sparse gradient ``(values, indices)``.",
    }[form]
    options = dict(_OPTIONS_DOC)
    if form == "multi":
        options["weight_decay"] += ", one value or one per parameter"
    lines = [_signatures.rule_doc(rule, first, _slot_name(form), per="tensor")]
    lines += [f"    {name}: {options[name]}" for name in sig.parameters if name in options]
    if form == "sparse":
        lines += ["", "Rows listed twice in ``indices`` are summed; an index out of range raises ValueError."]
    lines += ["", "Returns True when the step was applied. See :mod:`pyopt.kernels` for dtypes and checks."]
    return "\n".join(lines)


def _make_function(rule, form: str):
    name, sig = rule.name + _FORMS[form], _signature(rule, form)
    bind = _signatures.binder(name, sig)
    # What a call reads, worked out once: calls of small arrays are dominated by Python time.
    multi, sparse = form == "multi", form == "sparse"
    slots = [(slot.list if multi else slot.name, slot.optional) for slot in rule.slots]

    def function(*args, **kwargs):
        a = bind(args, kwargs)
        if multi:
            arrays = [_list(a["params"], "params"), _list(a["grads"], "grads")]
            arrays += [None if optional and a[s] is None else _list(a[s], s) for s, optional in slots]
        else:
            arrays = [[a["param"]], [a["values"]], [a["indices"]]] if sparse else [[a["param"]], [a["grad"]]]
            arrays += [None if optional and a[s] is None else [a[s]] for s, optional in slots]
        return _step(
            rule,
            arrays,
            a,  # _step reads the rule's hyperparameters from the arguments
            {flag: a[flag] for flag in rule.flags},
            weight_decay=a["weight_decay"],
            clipnorm=a["clipnorm"],
            global_clipnorm=a.get("global_clipnorm"),
            skip_nonfinite=a["skip_nonfinite"],
            lazy=a.get("lazy"),
            sparse=sparse,
        )

    return _signatures.publish(function, name, __name__, sig, _doc(rule, form, sig))


def _make_kernels_functions(rule) -> dict:
    """``{name: function}``: the rule's <rule>, <rule>_multi and <rule>_sparse."""
    return {rule.name + suffix: _make_function(rule, form) for form, suffix in _FORMS.items()}


__all__ = []
for _rule in RULES.values():
    for _name, _function in _make_kernels_functions(_rule).items():
        globals()[_name] = _function
        __all__.append(_name)
del _rule, _name, _function
