"""The functional API over TensorFlow variables, and the one place that picks the backend.

A call is validated here once, the same way for both backends, before anything runs: the
rule's hyperparameters (:mod:`pyopt._rules`), the lists, the variables and the options,
which become one :class:`StepOptions` passed down to the backend (:mod:`._fused` or
:mod:`._tf_math`) with the rule's table row.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, replace

import tensorflow as tf

from .. import _loader, _rules, _signatures
from . import _tf_math
from ._variables import tf_variable

# No pyopt._core here: the TF API needs only TensorFlow (and, for backend="fused", the op
# library), so it keeps working on the pure-TF backend when the compiled core is missing.
BACKENDS = ("auto", "fused", "tf")


class FusedBackendError(RuntimeError):
    """backend="fused" was requested for a step the fused ops cannot run."""

    # Autograph re-raises errors from tf.function code under their own type only when the
    # type keeps Exception.__init__; otherwise callers would get a StagingError.
    __init__ = Exception.__init__


def _fused_module():
    from . import _fused

    return _fused


def in_xla_context() -> bool:
    """True while tracing a function that XLA will compile (``jit_compile=True``)."""
    if tf.executing_eagerly():
        return False
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def fused_unsupported_reason(variables, grads) -> str | None:
    """Why the fused ops cannot run this step, or None if they can."""
    variables, grads = list(variables), list(grads)
    return _unsupported_reason(variables, grads, lambda: _fused_module().variables_reason(variables))


def _unsupported_reason(variables, grads, variables_reason) -> str | None:
    """:func:`fused_unsupported_reason`, with what the variables alone say from ``variables_reason()``."""
    if _loader.forced_fallback():
        return f"{_loader.ENV_BACKEND}=tf forces the pure-TF backend"
    if in_xla_context():
        return "inside an XLA-compiled function (custom ops have no XLA kernel)"
    fused = _fused_module()
    return fused.library_reason() or variables_reason() or fused.gradients_reason(variables, grads)


def resolve_backend(backend: str, variables, grads) -> str:
    """The backend that runs this step: "fused" or "tf".

    "auto" picks "fused" when the op library is loaded and every variable is a CPU resource
    variable of a supported dtype outside XLA (gradients dense or IndexedSlices), else "tf". "fused" raises
    :class:`FusedBackendError` with the reason when it cannot run the step (except under
    PYOPT_BACKEND=tf, which always wins). "tf" always uses the pure-TF ops.
    """
    check_backend(backend)
    if backend == "tf" or _loader.forced_fallback():
        return "tf"
    reason = fused_unsupported_reason(variables, grads)
    if reason is None:
        return "fused"
    if backend == "fused":
        raise FusedBackendError(f"backend='fused' cannot run this step: {reason}")
    return "tf"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class StepOptions:
    """How a step runs besides the rule's hyperparameters: checked once by :meth:`build` (when a
    :class:`Step` is made), then passed to the backend as it is.

    ``lazy`` concerns IndexedSlices gradients only (True: only the rows present move);
    whether a gradient is dense or sparse is the gradient's, and the fused ops are told
    which (``sparse=``) per group of variables.
    """

    weight_decay: tuple  # one float per variable: p = p - lr*wd*p before the update
    clipnorm: float | None = None  # clip each gradient by its own L2 norm
    global_clipnorm: float | None = None  # clip all gradients by their joint L2 norm
    skip_nonfinite: bool = False  # a step whose gradients hold NaN/Inf writes nothing
    use_locking: bool = True
    lazy: bool = False

    @classmethod
    def build(
        cls,
        n: int,
        *,
        weight_decay=0.0,
        clipnorm=None,
        global_clipnorm=None,
        skip_nonfinite=False,
        use_locking=True,
        lazy=False,
    ) -> StepOptions:
        """The options of a call over ``n`` variables, checked: ``weight_decay`` a number or
        one per variable, the clip thresholds Python numbers > 0 or None (at most one), flags bool."""
        return cls(
            weight_decay=_weight_decays(weight_decay, n),
            clipnorm=_clip(_rules.CLIPNORM, clipnorm),
            global_clipnorm=_clip(_rules.GLOBAL_CLIPNORM, global_clipnorm),
            skip_nonfinite=_rules.check_flag("skip_nonfinite", skip_nonfinite),
            use_locking=_rules.check_flag("use_locking", use_locking),
            lazy=_rules.check_flag("lazy", lazy),
        )._exclusive()

    def _exclusive(self) -> StepOptions:
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError("clipnorm and global_clipnorm are mutually exclusive: set at most one")
        return self

    def pick(self, idx) -> StepOptions:
        """The options of the variables ``idx`` (their weight decays)."""
        return replace(self, weight_decay=tuple(self.weight_decay[i] for i in idx))


def _weight_decays(weight_decay, n: int) -> tuple:
    if isinstance(weight_decay, (list, tuple)):
        _check_lengths([("variables", range(n)), ("weight_decay", weight_decay)])
        return tuple(
            _rules.check(_rules.WEIGHT_DECAY, wd, name=f"weight_decay[{i}]") for i, wd in enumerate(weight_decay)
        )
    return (_rules.check(_rules.WEIGHT_DECAY, weight_decay, what="a real number or a list of real numbers"),) * n


def _clip(param, value) -> float | None:
    # Whether to clip, and how, is fixed when the step is built (one op or another): a number.
    return None if value is None else _rules.check(param, value, what="a Python number > 0 or None")


# --------------------------------------------------------------------------- checks


def _check_hyper(rule, hyper: dict, flags: dict) -> dict:
    """The hyperparameters as the backends take them, checked when the step is built, the same
    for both backends: a number must lie in its range (ValueError, in the core's words) and
    becomes a float (an int for ``step``), and is 0 if it needs an optional slot that is not
    given (``flags``); a tensor or variable must be a scalar where its shape is known (its
    value is checked when the step runs, see :func:`_hyper_asserts`)."""
    out = {}
    for param in rule.params:
        value = hyper[param.name]
        if value is None or isinstance(value, numbers.Number):
            kind = "an int" if param.range.integer else "a real number"
            out[param.name] = _rules.check(param, value, what=f"{kind} or a scalar tensor")
            continue
        shape = getattr(value, "shape", None)
        if shape is not None and shape != () and tf.TensorShape(shape).rank not in (None, 0):
            raise ValueError(f"{param.name} must be a scalar, got shape {tf.TensorShape(shape).as_list()}")
        out[param.name] = value
    error = rule.slot_error(out, flags)
    if error:
        raise ValueError(error)
    return out


def _hyper_asserts(rule, hyper: dict, flags: dict) -> list:
    """One assertion per tensor- or variable-valued hyperparameter (Python numbers were checked
    by :func:`_check_hyper`), for the pure-TF backend (the fused ops check their inputs
    themselves): InvalidArgumentError naming the argument, e.g. "assertion failed: [lr must
    be a finite number >= 0, got] [-1]", before anything is written.

    Empty under XLA, which compiles Assert into a no-op (tf2xla's AssertOp): there a bad value
    cannot raise, as for the index checks of sparse gradients.
    """
    named = [p for p in rule.params if not isinstance(hyper[p.name], (int, float))]
    if not named or in_xla_context():
        return []
    checks = []
    for param in named:
        x = tf.cast(hyper[param.name], tf.float64)
        if x.shape.rank is None:
            x = tf.reshape(x, [])
        checks.append(
            tf.raw_ops.Assert(
                condition=param.range.contains(x, tf.logical_and),
                data=[f"{param.name} must be {param.range.text}, got", x],
                summarize=1,
                name=f"check_{param.name}",
            )
        )
        if param.needs and not flags[param.needs]:
            checks.append(
                tf.raw_ops.Assert(
                    condition=tf.equal(x, 0.0),
                    data=[f"{rule.needs_text(param)}, got", x],
                    summarize=1,
                    name=f"check_{param.name}_needs_{param.needs}",
                )
            )
    return checks


def _check_lengths(names_lists) -> int:
    """Every list has as many entries as the first (None: a list not given)."""
    (first_name, first), *rest = names_lists
    for name, items in rest:
        if items is not None and len(items) != len(first):
            raise ValueError(f"{name} has {len(items)} entries but {first_name} has {len(first)}")
    return len(first)


def _as_list(x, name: str) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(f"{name} must be a list of variables/tensors, got {type(x).__name__}")


def _check_variables(names_lists) -> None:
    """Every variable and slot is a ``tf.Variable`` or a Keras 3 variable, and none appears
    twice (the fused ops refuse it too, the pure-TF maths would write garbage; a Keras 3
    variable counts as the ``tf.Variable`` it wraps). A Python check: it runs eagerly and
    when a tf.function is traced."""
    seen: dict = {}
    for list_name, items in names_lists:
        for i, x in enumerate(items or ()):
            inner = tf_variable(x)
            name = f"{list_name}[{i}]"
            if inner is None:
                raise TypeError(f"{name} must be a tf.Variable or keras.Variable, got {type(x).__name__}")
            if id(inner) in seen:
                raise ValueError(f"{seen[id(inner)]} and {name} are the same variable; each must be separate")
            seen[id(inner)] = name


def _is_sparse(grad) -> bool:
    return isinstance(grad, tf.IndexedSlices)


def _check_sparse(variables, grads) -> None:
    """IndexedSlices gradients need integer indices and a variable with rows (rank >= 1)."""
    for i, (var, grad) in enumerate(zip(variables, grads, strict=True)):
        if not _is_sparse(grad):
            continue
        if grad.indices.dtype not in (tf.int32, tf.int64):
            raise TypeError(
                f"grads[{i}] is a tf.IndexedSlices with {grad.indices.dtype.name} indices; int32 or int64 needed"
            )
        if tf.TensorShape(var.shape).rank == 0:
            raise ValueError(
                f"grads[{i}] is a tf.IndexedSlices but variables[{i}] is a scalar; "
                "row-sparse gradients need a variable of rank >= 1"
            )


def _check_slots(variables, slots) -> list:
    """Every variable has a supported dtype and each of its slots its dtype and (where known)
    shape. ``slots``: (list name, list or None) pairs. Returns each variable's (dtype, shape)."""
    out = []
    for i, var in enumerate(variables):
        dtype, shape = tf.as_dtype(var.dtype), tf.TensorShape(var.shape)
        error = _rules.dtype_error(f"variables[{i}]", dtype.name)
        if error:
            raise TypeError(error)
        for name, items in slots:
            if items is not None:
                _check_like(f"{name}[{i}]", items[i], i, dtype, shape)
        out.append((dtype, shape))
    return out


def _check_like(name, x, i, dtype, shape, check_shape=True) -> None:
    """``x`` has the dtype of ``variables[i]`` and, where known when the step is built, its shape."""
    x_dtype = getattr(x, "dtype", None)
    if x_dtype is not None and x_dtype != dtype and tf.as_dtype(x_dtype) != dtype:
        raise TypeError(f"{name} has dtype {tf.as_dtype(x_dtype).name} but variables[{i}] has dtype {dtype.name}")
    if check_shape:
        x_shape = getattr(x, "shape", None)
        if x_shape != shape and not tf.TensorShape(x_shape).is_compatible_with(shape):
            raise ValueError(
                f"{name} has shape {tf.TensorShape(x_shape).as_list()} but variables[{i}] has shape {shape.as_list()}"
            )


# --------------------------------------------------------------------------- the step


class Step:
    """A step of one rule (a :class:`pyopt._rules.Rule`) over fixed variables and slots.

    Built once, it checks what does not change from step to step: the lists (``slot_lists``
    follow ``rule.slots``; None: an optional slot not given), that they hold distinct
    variables of a supported dtype with slots like them, the flags (by name), the backend
    and the options (the keywords of :meth:`StepOptions.build`). Each call checks the
    gradients and the hyperparameters (by name), picks the backend and runs the step;
    it returns the backend that ran it. The ``*_multi`` functions build one per call; the
    Keras optimizers keep one per set of variables.

    On the fused path one op runs per (device, dtype, dense/sparse) group; a global_clipnorm
    spanning several groups is applied to the gradients first so every group sees the joint
    norm (likewise the skip_nonfinite test).
    """

    def __init__(self, rule, variables, slot_lists, *, flags=None, backend: str = "auto", **options):
        self.rule = rule
        self.backend = check_backend(backend)
        flags = dict(flags or {})
        unknown = sorted(set(flags) - set(rule.flags))
        if unknown:
            raise TypeError(f"{rule.name} has no flag {', '.join(unknown)}")
        self.flags = {name: _rules.check_flag(name, flags.get(name, False)) for name in rule.flags}
        self.variables = _as_list(variables, "variables")
        self.slot_lists = [
            None if items is None and slot.optional else _as_list(items, slot.list)
            for slot, items in zip(rule.slots, slot_lists, strict=True)
        ]
        for slot, items in zip(rule.slots, self.slot_lists, strict=True):
            if slot.optional:
                self.flags[slot.given] = items is not None
        named_slots = [(slot.list, items) for slot, items in zip(rule.slots, self.slot_lists, strict=True)]
        n = _check_lengths([("variables", self.variables), *named_slots])
        self.options = StepOptions.build(n, **options)
        _check_variables([("variables", self.variables), *named_slots])
        self._like = _check_slots(self.variables, named_slots)
        self._variables_reason = None  # what the variables say against the fused ops: (reason,) once asked
        self._op_calls: dict = {}  # which gradients are sparse -> [(indices, OpCall)]

    def __call__(self, grads, hyper: dict) -> str:
        return self._run(grads, hyper)

    # Plain Python over tensors (no data-dependent control flow): autograph need not convert
    # it, nor recurse from here into the loader (which it cannot parse where stdlib sources
    # are absent).
    @tf.autograph.experimental.do_not_convert
    def _run(self, grads, hyper: dict) -> str:
        hyper = _check_hyper(self.rule, hyper, self.flags)
        grads = _as_list(grads, "grads")
        _check_lengths([("variables", self.variables), ("grads", grads)])
        _check_sparse(self.variables, grads)
        for i, (grad, (dtype, shape)) in enumerate(zip(grads, self._like, strict=True)):
            sparse = _is_sparse(grad)
            _check_like(f"grads[{i}]", grad.values if sparse else grad, i, dtype, shape, check_shape=not sparse)
        if not self.variables:
            return "tf"
        chosen = self._resolve(grads)
        if chosen == "tf":
            # Every op of the step (reads included) waits for the checks of tensor hyperparameters.
            with tf.control_dependencies(_hyper_asserts(self.rule, hyper, self.flags)):
                _tf_math.apply(self.rule, self.variables, grads, self.slot_lists, hyper, self.flags, self.options)
            return chosen
        sparse = tuple(_is_sparse(g) for g in grads)
        calls = self._op_calls.get(sparse) or self._build_op_calls(sparse)
        if len(calls) > 1 and any(sparse):
            # Several op calls: check every index first, so that a bad one writes nothing.
            with tf.control_dependencies(_tf_math.index_checks(self.variables, grads)):
                self._run_fused(calls, grads, hyper)
        else:
            self._run_fused(calls, grads, hyper)
        return chosen

    def _resolve(self, grads) -> str:
        """The backend of this step: as :func:`resolve_backend`, the variables' part asked once."""
        if self.backend == "tf" or _loader.forced_fallback():
            return "tf"
        reason = _unsupported_reason(self.variables, grads, self._reason_of_variables)
        if reason is None:
            return "fused"
        if self.backend == "fused":
            raise FusedBackendError(f"backend='fused' cannot run this step: {reason}")
        return "tf"

    def _reason_of_variables(self):
        if self._variables_reason is None:
            self._variables_reason = (_fused_module().variables_reason(self.variables),)
        return self._variables_reason[0]

    def _build_op_calls(self, sparse: tuple) -> list:
        """One :class:`~pyopt.ops._fused.OpCall` per (device, dtype, sparse) group. With several
        groups, a joint norm (global_clipnorm) or skip test is done before the calls."""
        groups: dict = {}
        for i, var in enumerate(self.variables):
            groups.setdefault((getattr(var, "device", ""), var.dtype, sparse[i]), []).append(i)
        options = self.options
        if len(groups) > 1:
            options = replace(options, global_clipnorm=None, skip_nonfinite=False)
        op_call = _fused_module().OpCall
        calls = []
        for (_, _, is_sparse), idx in groups.items():

            def pick(items, idx=idx):
                return None if items is None else [items[i] for i in idx]

            calls.append(
                (
                    idx,
                    op_call(
                        self.rule,
                        pick(self.variables),
                        [pick(s) for s in self.slot_lists],
                        self.flags,
                        options.pick(idx),
                        sparse=is_sparse,
                    ),
                )
            )
        if len(self._op_calls) >= 4:  # a new pattern of sparse gradients: rarely more than one
            self._op_calls.clear()
        self._op_calls[sparse] = calls
        return calls

    def _run_fused(self, calls, grads, hyper) -> None:
        def run_all(grads):
            return [call([grads[i] for i in idx], hyper) for idx, call in calls]

        if len(calls) > 1 and (self.options.global_clipnorm or self.options.skip_nonfinite):
            grads, ok = _tf_math.scaled_gradients(grads, self.options.global_clipnorm, self.options.skip_nonfinite)
            _tf_math.run_if(ok, lambda: run_all(grads))
        else:
            run_all(grads)


# --------------------------------------------------------------------------- the public functions
# Each rule of pyopt._rules.RULES gives <rule>_multi (exported by pyopt.ops with the
# single-variable <rule>): the signature and docstring come from its row, so a new row needs no
# edit here.

_P = inspect.Parameter
# The options of every *_multi function, after the rule's arguments: (name, default, annotation);
# weight_decay's default is the rule's.
_MULTI_OPTIONS = (
    ("weight_decay", None, _P.empty),
    ("clipnorm", None, "float | None"),
    ("global_clipnorm", None, "float | None"),
    ("skip_nonfinite", False, "bool"),
    ("use_locking", True, "bool"),
    ("backend", "auto", "str"),
    ("lazy", False, "bool"),
)
_STEP_OPTIONS = ("weight_decay", "clipnorm", "global_clipnorm", "skip_nonfinite", "use_locking", "lazy")

# The text every *_multi docstring shares, after the rule's formula.
_MULTI_DOC = """
Gradients are clipped first (``clipnorm``: each by its own norm, ``global_clipnorm``:
all by their joint norm, ``g *= c / max(norm, c)``). The hyperparameters ({hyper}) may be
floats or scalar tensors or variables; ``weight_decay`` (one value or one per variable),
``clipnorm`` and ``global_clipnorm`` are Python numbers. Returns the backend that ran the
step ("fused" or "tf").

Both backends check the call before anything runs: list lengths, dtypes (float16,
bfloat16, float32, float64; TypeError otherwise), shapes, no variable twice among
variables and slots (ValueError), Python-number hyperparameters in range (ValueError); a
tensor hyperparameter out of range raises InvalidArgumentError when the step runs, with
nothing written (except under XLA, where assertions are no-ops).

Gradients may be ``tf.IndexedSlices`` (row-sparse, e.g. from ``Embedding``), mixed with
dense ones. Rows listed twice are summed. ``lazy=False`` (default) gives the dense step with
the densified gradient, as Keras does: rows without a gradient get g = 0 (their slots decay,
weight decay applies to every row). ``lazy=True`` moves only the rows present and their
slots (lazy Adam). Clipping uses the norm of the summed gradient. An index outside
``[0, rows)`` raises InvalidArgumentError and nothing is written.
"""


def _make_multi(rule):
    """``<rule>_multi(variables, grads, *slot lists, **hyperparameters, flags and options)``:
    one :class:`Step` of the rule, built and called."""
    name = f"{rule.name}_multi"
    arrays = ["variables", "grads"] + [slot.list for slot in rule.required_slots]
    sig = inspect.Signature(
        [_P(a, _P.POSITIONAL_OR_KEYWORD, annotation="Sequence") for a in arrays]
        + _signatures.rule_parameters(rule, lambda slot: slot.list, "Sequence | None")
        + [
            _P(o, _P.KEYWORD_ONLY, default=rule.weight_decay if o == "weight_decay" else d, annotation=a)
            for o, d, a in _MULTI_OPTIONS
        ],
        return_annotation="str",
    )

    bind = _signatures.binder(name, sig)

    def multi(*args, **kwargs):
        a = bind(args, kwargs)
        step = Step(
            rule,
            a["variables"],
            [a[slot.list] for slot in rule.slots],
            flags={flag: a[flag] for flag in rule.flags},
            backend=a["backend"],
            **{option: a[option] for option in _STEP_OPTIONS},
        )
        return step(a["grads"], {p.name: a[p.name] for p in rule.params})

    hyper = ", ".join(f"``{p.name}``" for p in rule.params)
    doc = _signatures.rule_doc(rule, f"{rule.title}, on every variable in one step.", lambda slot: slot.list)
    return _signatures.publish(multi, name, "pyopt.ops", sig, doc + "\n" + _MULTI_DOC.format(hyper=hyper))


for _rule in _rules.RULES.values():
    globals()[f"{_rule.name}_multi"] = _make_multi(_rule)
del _rule
