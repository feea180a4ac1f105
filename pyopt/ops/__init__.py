"""Optimizer updates on TensorFlow variables: pyopt's fused custom ops, or pure-TF ops.

Every function updates the variables (and slot variables) in place and returns the
backend that ran the step: ``"fused"`` (one custom-op call per device/dtype group,
clipping fused in) or ``"tf"`` (the same formulas as plain TF ops; works under XLA).
``backend="auto"`` (default) picks fused where it can; ``PYOPT_BACKEND=tf`` forces the
pure-TF path everywhere.

The ``*_multi`` functions take lists; the single-variable forms take one of each.
Gradients may be dense or ``tf.IndexedSlices`` (row-sparse, e.g. from ``Embedding``
layers); ``lazy=True`` then updates only the rows present (lazy Adam), the default gives
the dense-equivalent step as Keras does.

Both backends validate a call the same way before anything is written (the same variable
twice among variables and slots, out-of-range hyperparameters, ... raise). Only TensorFlow
is needed: without pyopt's compiled core (``pyopt._core``, used by ``pyopt.kernels``) this
API still runs, on the pure-TF backend or on the fused ops if their library loads.
"""

from .._deps import missing

try:
    import tensorflow  # noqa: F401  (imported first only to say what to install when it is missing)
except ImportError as exc:
    raise missing("pyopt.ops", exc) from exc

import inspect

from .. import _signatures
from .._rules import RULES
from . import _api
from ._api import (
    BACKENDS,
    FusedBackendError,
    check_backend,
    fused_unsupported_reason,
    in_xla_context,
    resolve_backend,
)

_P = inspect.Parameter
# The options of every single-variable function, after the rule's arguments: (name, default);
# weight_decay's default is the rule's.
_SINGLE_OPTIONS = (
    ("weight_decay", None),
    ("clipnorm", None),
    ("use_locking", True),
    ("backend", "auto"),
    ("lazy", False),
)


def _make_single(rule, multi):
    """``<rule>(variable, grad, *slots, ...)``: ``multi`` (``<rule>_multi``) on one variable."""
    arrays = ["variable", "grad"] + [slot.name for slot in rule.required_slots]
    sig = inspect.Signature(
        [_P(a, _P.POSITIONAL_OR_KEYWORD) for a in arrays]
        + _signatures.rule_parameters(rule, lambda slot: slot.name)
        + [_P(o, _P.KEYWORD_ONLY, default=rule.weight_decay if o == "weight_decay" else d) for o, d in _SINGLE_OPTIONS]
    )

    bind = _signatures.binder(rule.name, sig)

    def single(*args, **kwargs):
        a = bind(args, kwargs)
        return multi(
            [a["variable"]],
            [a["grad"]],
            *[[a[slot.name]] for slot in rule.required_slots],
            **{p.name: a[p.name] for p in rule.params},
            **{flag: a[flag] for flag in rule.flags},
            **{s.list: None if a[s.name] is None else [a[s.name]] for s in rule.slots if s.optional},
            **{option: a[option] for option, _ in _SINGLE_OPTIONS},
        )

    first = f"Single-variable :func:`{multi.__name__}`: {rule.title}, in place."
    doc = _signatures.rule_doc(rule, first, lambda slot: slot.name) + (
        f"\n\nThe options and the checks are :func:`{multi.__name__}`'s (without ``global_clipnorm``\n"
        "and ``skip_nonfinite``, which concern several variables). ``lazy=True``: only the rows\n"
        "of an IndexedSlices gradient move. Returns the backend used."
    )
    return _signatures.publish(single, rule.name, __name__, sig, doc)


__all__ = [
    "BACKENDS",
    "FusedBackendError",
    "check_backend",
    "fused_unsupported_reason",
    "in_xla_context",
    "resolve_backend",
]
for _rule in RULES.values():
    _multi = getattr(_api, f"{_rule.name}_multi")
    globals()[_rule.name], globals()[_multi.__name__] = _make_single(_rule, _multi), _multi
    __all__ += [_rule.name, _multi.__name__]
del _rule, _multi
