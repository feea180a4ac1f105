"""How pyopt.kernels and pyopt.ops make their public per-rule functions from a row of the
rule table (:mod:`pyopt._rules`): the rule's keyword arguments, its docstring, and the binding
of a call's arguments. No TensorFlow and no ``pyopt._core`` here (both front ends use it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

_P = inspect.Parameter


def rule_parameters(rule, slot_name, slot_annotation=_P.empty, *, annotate=False) -> list:
    """The rule's keyword-only arguments: the hyperparameters (a default of None in the row:
    required), the flags (default False) and the optional slots (``slot_name(slot)``, default
    None: not given). ``annotate``: hyperparameters as ``int`` / ``float``, flags as ``bool``
    (the NumPy functions, whose hyperparameters are numbers, not tensors)."""

    def ann(text):
        return text if annotate else _P.empty

    params = [
        _P(
            p.name,
            _P.KEYWORD_ONLY,
            default=_P.empty if p.default is None else p.default,
            annotation=ann("int" if p.range.integer else "float"),
        )
        for p in rule.params
    ]
    params += [_P(flag, _P.KEYWORD_ONLY, default=False, annotation=ann("bool")) for flag in rule.flags]
    params += [
        _P(slot_name(slot), _P.KEYWORD_ONLY, default=None, annotation=slot_annotation)
        for slot in rule.slots
        if slot.optional
    ]
    return params


def rule_doc(rule, first: str, slot_name, per: str = "variable") -> str:
    """A docstring: ``first``, the rule's formula (per ``per``), its slots, hyperparameters and flags."""
    lines = [first, "", f"Per {per}, after clipping ``g``::", ""]
    lines += ["    " + line for line in rule.formula.splitlines()]
    lines += ["", "Arguments:"]
    lines += [f"    {slot_name(s)}: {s.doc}" for s in rule.slots if not s.optional]
    lines += [f"    {p.name}: {p.doc}" for p in rule.params]
    lines += [f"    {flag}: a bool, see the formula" for flag in rule.flags]
    lines += [f"    {slot_name(s)}: {s.doc} (given: {s.given})" for s in rule.slots if s.optional]
    return "\n".join(lines)


def publish(function: Callable, name: str, module: str, sig: inspect.Signature, doc: str) -> Callable:
    """``function`` as the public ``module.name``, with its signature and docstring."""
    function.__name__ = function.__qualname__ = name
    function.__module__ = module
    function.__signature__ = sig
    function.__doc__ = doc
    return function


def binder(name: str, sig: inspect.Signature) -> Callable:
    """``bind(args, kwargs)``: the arguments of a call of the function ``name`` with the
    signature ``sig`` (positional-or-keyword, then keyword-only), by name, defaults filled in;
    else Python's TypeError naming the function. The generated functions of pyopt.kernels and
    pyopt.ops use it instead of ``sig.bind``, which costs some 20 us per call."""
    params = sig.parameters.values()
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    names = set(sig.parameters)
    required = [n for n in sig.parameters if n not in defaults]

    def bind(args: tuple, kwargs: dict) -> dict:
        if len(args) > len(positional):
            raise TypeError(f"{name}() takes {len(positional)} positional arguments but {len(args)} were given")
        if not names.issuperset(kwargs):
            unknown = next(key for key in kwargs if key not in names)
            raise TypeError(f"{name}() got an unexpected keyword argument '{unknown}'")
        if not kwargs.keys().isdisjoint(positional[: len(args)]):
            twice = next(key for key in positional[: len(args)] if key in kwargs)
            raise TypeError(f"{name}() got multiple values for argument '{twice}'")
        arguments = dict(defaults)
        arguments.update(zip(positional, args))
        arguments.update(kwargs)
        if len(arguments) < len(names):
            missing = [f"'{n}'" for n in required if n not in arguments]
            s = "s" if len(missing) > 1 else ""
            raise TypeError(f"{name}() missing {len(missing)} required argument{s}: {', '.join(missing)}")
        return arguments

    return bind
