"""The chapter's optimizers as Keras 2 (``tf_keras``) legacy optimizers, on pyopt's ops.

The chapter closes by subclassing the Keras 2 optimizer base class
(``tf_keras.optimizers.legacy.Optimizer``): hyperparameters with ``_set_hyper``, slots in
``_create_slots``, per-step coefficients in ``_prepare_local``, the update in
``_resource_apply_dense`` / ``_resource_apply_sparse``, and ``get_config``. These
classes are written that way, with the update done by :mod:`pyopt.ops` (pyopt's fused
custom op, or the same maths as plain TF ops when the op library is missing, under XLA, or
with ``backend="tf"``)::

    GradientDescent  p = p - lr*g
    Momentum         m = beta*m - lr*g;  p = p + m            (nesterov: p = p + beta*m - lr*g)
    Adam             lr_t = lr*sqrt(1-beta_2^t)/(1-beta_1^t)   (t = iterations + 1)
                     m = beta_1*m + (1-beta_1)*g;  v = beta_2*v + (1-beta_2)*g^2
                     [amsgrad: vhat = max(vhat, v), used in place of v]
                     p = p - lr_t*m/(sqrt(v)+epsilon)
    Adagrad          acc = acc + g^2;  p = p - lr*g/sqrt(acc + epsilon)
    RMSprop          v = rho*v + (1-rho)*g^2   [centered: a = rho*a + (1-rho)*g, v - a^2 in place of v]
                     inc = lr*g/sqrt(v + epsilon);  p = p - inc   [momentum > 0: b = momentum*b + inc, p = p - b]

Adagrad and RMSprop are pyopt's rules, with ``epsilon`` under the square root. Legacy
``Adagrad``, and legacy ``RMSprop`` with ``momentum=0``, add it after the root
(``sqrt(acc) + epsilon``): for ``Adagrad`` with an accumulator of at least 0.1 (its default
start) and ``epsilon=1e-7`` that is a relative difference of the step of at most 1.84e-7,
float32 rounding; for ``RMSprop`` without momentum it is not (see the classes). Legacy
``RMSprop`` with ``momentum > 0`` (TF's ``ApplyRMSProp`` kernels) has pyopt's form.

``lr`` is the decayed learning rate of the base class, ``lr/(1 + decay*iterations)`` (or a
``LearningRateSchedule``'s value), computed in float64. Defaults, slot names and hyperparameter
names are those of ``tf_keras.optimizers.legacy.SGD`` / ``Adam`` / ``Adagrad`` / ``RMSprop``
(``Momentum`` keeps its velocity in SGD's ``"momentum"`` slot and ``beta`` in SGD's
``"momentum"`` hyperparameter), so checkpoints move between them.

Clipping: ``clipvalue``, ``clipnorm`` and ``global_clipnorm`` work as in the base class. A
numeric ``clipnorm`` on a dense gradient is done inside pyopt's op (``g *= c/max(||g||, c)``,
fused into the update); sparse gradients are clipped by the base class, as legacy Keras does.

Sparse gradients (``tf.IndexedSlices``, e.g. from an embedding) go to pyopt's sparse ops, which
sum repeated indices themselves (so the base class's de-duplication is skipped).
``GradientDescent``, ``Momentum``, ``Adagrad`` and ``RMSprop`` with ``momentum > 0`` update only
the touched rows (``lazy=True``: the slots of other rows are left alone), as legacy ``SGD``,
``Adagrad`` and ``RMSprop`` (TF's sparse kernels) do. ``Adam`` and ``RMSprop`` without momentum
run the dense step with the densified gradient (``lazy=False``): legacy ``Adam``'s sparse update
also decays ``m`` and ``v`` and moves every row, legacy ``RMSprop``'s decays ``rms`` (and ``mg``)
everywhere and moves the touched rows (a zero gradient moves no row). So the results are legacy
Keras' own, up to rounding (and, for ``RMSprop`` without momentum, the placement of ``epsilon``).

``beta``, ``beta_1``, ``beta_2``, ``rho`` and ``momentum`` are Python floats (pyopt's kernels
take them as constants): each step reads their current value, and inside a ``tf.function`` the
value is fixed when the function is traced; a step of that function fails with a clear error if
the value has changed since (call ``model.make_train_function(force=True)`` or re-create the
function). The learning rate and ``decay`` may change freely, as in Keras.

Needs ``tf_keras`` (``pip install "pyopt[legacy]"``); use ``tf_keras`` models (or ``tf.keras``
with ``TF_USE_LEGACY_KERAS=1``). TF2 behaviour (eager or ``tf.function``) only: the update ops
are ordered by automatic control dependencies, not returned to a TF1 graph.
"""

from __future__ import annotations

from ._deps import missing

try:
    import tensorflow as tf
    import tf_keras
except ImportError as exc:
    raise missing("pyopt.legacy", exc) from exc

from . import _rules
from . import ops as pyopt_ops
from ._rules import ADAGRAD, ADAM, MOMENTUM, RMSPROP

__all__ = ["Adagrad", "Adam", "GradientDescent", "Momentum", "RMSprop"]

_register = tf_keras.saving.register_keras_serializable(package="pyopt.legacy")
# The learning-rate decay of the legacy base class: lr / (1 + decay*iterations).
_DECAY = _rules.Param("decay", _rules.at_least(0), 0.0, "learning-rate decay")


class _PyoptLegacyOptimizer(tf_keras.optimizers.legacy.Optimizer):
    """What the optimizers share: argument checks, per-step scalars, clipnorm fusion.

    Subclasses set their own hyperparameters and implement ``_create_slots``, ``_update``
    (one ``pyopt.ops`` call of their rule), ``get_config``, and ``_sparse_lazy`` where the
    ``tf_keras`` class moves every row for a sparse gradient.
    """

    _HAS_AGGREGATE_GRAD = True
    #: Hyperparameters pyopt's kernels take as Python floats: name -> the rule table's parameter.
    _CONSTANT_HYPERS: dict = {}

    def __init__(self, name, learning_rate, *, backend, **kwargs):
        self._backend = pyopt_ops.check_backend(backend)
        for param in (_rules.CLIPNORM, _rules.GLOBAL_CLIPNORM, _rules.CLIPVALUE):
            if kwargs.get(param.name) is not None:
                _rules.check(param, kwargs[param.name])
        if "decay" in kwargs:
            _rules.check(_DECAY, kwargs["decay"])
        super().__init__(name, **kwargs)
        learning_rate = kwargs.get("lr", learning_rate)
        if isinstance(learning_rate, bool) or _rules.is_number(learning_rate):
            learning_rate = _rules.check(_rules.LR, learning_rate, name="learning_rate")
        self._set_hyper("learning_rate", learning_rate)  # or a schedule, a callable, a tensor
        self._set_hyper("decay", self._initial_decay)

    def _set_hyper(self, name, value):
        if name in self._CONSTANT_HYPERS:
            value = _rules.check(self._CONSTANT_HYPERS[name], value)
        super()._set_hyper(name, value)

    def _constant_hyper(self, name: str) -> float:
        """The current value of a constant hyperparameter, as a Python float.

        After the first step the value lives in a variable: it is read eagerly (at trace time
        inside a ``tf.function``), and a traced function checks at run time that it still holds.
        """
        value = self._hyper[name]
        if not isinstance(value, tf.Variable):
            return float(value)
        with tf.init_scope():
            number = float(tf_keras.backend.get_value(value))
        if not tf.executing_eagerly():
            tf.debugging.assert_equal(
                value,
                tf.constant(number, value.dtype),
                message=f"pyopt.legacy.{type(self).__name__}: {name} changed after this step was traced with "
                f"{name}={number!r}; re-create the tf.function (model.make_train_function(force=True))",
            )
        return number

    def _prepare_local(self, var_device, var_dtype, apply_state):
        # Per-step scalars of every variable of this (device, dtype): the decayed learning
        # rate in float64 (pyopt rounds per-step scalars once), the 1-based step, the constants.
        apply_state[(var_device, var_dtype)].update(
            lr_t=tf.identity(self._decayed_lr(tf.float64)),
            step=tf.identity(self.iterations + 1),
            **{name: self._constant_hyper(name) for name in self._CONSTANT_HYPERS},
        )

    def _create_all_weights(self, var_list):
        # An unsupported dtype gets the one message before any slot is made (a slot's initial
        # value of that dtype, Adagrad's 0.1 in int32, would fail first in TensorFlow's words).
        for var in var_list:
            error = _rules.dtype_error(var.name, var.dtype.base_dtype.name)
            if error:
                raise TypeError(error)
        return super()._create_all_weights(var_list)

    def _coefficients(self, var, apply_state) -> dict:
        var_dtype = var.dtype.base_dtype
        return (apply_state or {}).get((var.device, var_dtype)) or self._fallback_apply_state(var.device, var_dtype)

    @property
    def _fused_clipnorm(self):
        """The clipnorm pyopt's op applies to dense gradients (None: the base class clips)."""
        c = self._clipnorm
        return float(c) if _rules.is_number(c) and _rules.CLIPNORM.range.contains(c) else None

    def _transform_gradients(self, grads_and_vars):
        # As the base class, except that a numeric clipnorm of dense gradients is left to
        # pyopt's op, which fuses it into the update (the base class allows no gradient
        # transformers or global_clipnorm together with clipnorm).
        if self._fused_clipnorm is None:
            return super()._transform_gradients(grads_and_vars)
        if self._clipvalue is not None:
            grads_and_vars = self._clipvalue_fn(grads_and_vars)
        return [
            self._clipnorm_fn([(g, v)])[0] if isinstance(g, tf.IndexedSlices) else (g, v) for g, v in grads_and_vars
        ]

    def _update(self, grad, var, c: dict, **options) -> None:
        """One ``pyopt.ops`` step of the rule on ``var`` (``c``: the per-step scalars of
        ``_prepare_local``; ``options``: clipnorm, lazy, use_locking, backend)."""
        raise NotImplementedError

    def _sparse_lazy(self) -> bool:
        """Whether a sparse gradient moves only the touched rows and their slots, as the
        ``tf_keras`` class's sparse kernel does (False: the densified gradient's step)."""
        return True

    def _resource_apply_dense(self, grad, var, apply_state=None):
        self._update(grad, var, self._coefficients(var, apply_state), **self._op_options(self._fused_clipnorm))
        return tf.no_op()

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        # The touched rows (repeated indices summed by the op), already clipped by the base class
        options = self._op_options(clipnorm=None)
        self._update(
            _rows(grad, var, indices), var, self._coefficients(var, apply_state), lazy=self._sparse_lazy(), **options
        )
        return tf.no_op()

    def _op_options(self, clipnorm) -> dict:
        return dict(clipnorm=clipnorm, use_locking=self._use_locking, backend=self._backend)

    def _resource_apply_sparse_duplicate_indices(self, grad, handle, indices, **kwargs):
        # pyopt's sparse ops sum the values of repeated indices themselves.
        return self._resource_apply_sparse(grad, handle, indices, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            learning_rate=self._serialize_hyperparameter("learning_rate"),
            decay=self._initial_decay,
            backend=self._backend,
        )
        return config


def _rows(grad, var, indices):
    """The row-sparse gradient ``(grad, indices)`` of ``var`` as pyopt's ops take it."""
    return tf.IndexedSlices(grad, indices, tf.shape(var, out_type=indices.dtype))


@_register
class GradientDescent(_PyoptLegacyOptimizer):
    """The chapter's clipped gradient descent, ``p = p - lr*g`` (legacy ``SGD`` without momentum).

    Args:
      learning_rate: float >= 0 (default 0.01, as legacy ``SGD``), a ``LearningRateSchedule``
        or a callable; ``lr`` is an alias.
      clipnorm: clip each gradient to this L2 norm (``g *= c/max(||g||, c)``), fused into the update.
      backend: ``"auto"``, ``"fused"`` or ``"tf"`` (see :mod:`pyopt.ops`).
      **kwargs: ``decay``, ``clipvalue``, ``global_clipnorm``, ``lr`` (the base class's).
    """

    def __init__(self, learning_rate=0.01, clipnorm=None, name="GradientDescent", *, backend="auto", **kwargs):
        super().__init__(name, learning_rate, backend=backend, clipnorm=clipnorm, **kwargs)

    def _update(self, grad, var, c, **options):
        # sparse: p[i] = p[i] - lr*g[i] on the touched rows, as legacy SGD
        pyopt_ops.gradient_descent(var, grad, lr=c["lr_t"], **options)


@_register
class Momentum(_PyoptLegacyOptimizer):
    """The chapter's momentum: ``m = beta*m - lr*g; p = p + m`` (nesterov: ``p = p + beta*m - lr*g``).

    The same update as legacy ``SGD(learning_rate, momentum=beta, nesterov=nesterov)``, with its
    slot (``"momentum"``) and hyperparameter names; ``opt.momentum`` is ``opt.beta``.

    Args:
      learning_rate: float >= 0 (default 0.01), a ``LearningRateSchedule`` or a callable; ``lr``
        is an alias.
      beta: momentum in [0, 1], a Python float (default 0.9).
      nesterov: Nesterov momentum.
      clipnorm: clip each gradient to this L2 norm, fused into the update.
      backend: ``"auto"``, ``"fused"`` or ``"tf"`` (see :mod:`pyopt.ops`).
      **kwargs: ``decay``, ``clipvalue``, ``global_clipnorm``, ``lr`` (the base class's).
    """

    _CONSTANT_HYPERS = {"momentum": MOMENTUM.param("momentum")}

    def __init__(
        self, learning_rate=0.01, beta=0.9, nesterov=False, clipnorm=None, name="Momentum", *, backend="auto", **kwargs
    ):
        super().__init__(name, learning_rate, backend=backend, clipnorm=clipnorm, **kwargs)
        self._set_hyper("momentum", _rules.check(MOMENTUM.param("momentum"), beta, name="beta"))
        self.nesterov = _rules.check_flag("nesterov", nesterov)

    @property
    def beta(self):
        return self._get_hyper("momentum")

    @beta.setter
    def beta(self, value):
        self._set_hyper("momentum", value)

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "momentum")

    def _update(self, grad, var, c, **options):
        # sparse: on the touched rows only, as legacy SGD (other rows keep their velocity)
        pyopt_ops.momentum(
            var,
            grad,
            self.get_slot(var, "momentum"),
            lr=c["lr_t"],
            momentum=c["momentum"],
            nesterov=self.nesterov,
            **options,
        )

    def get_config(self):
        config = super().get_config()
        config.update(beta=self._serialize_hyperparameter("momentum"), nesterov=self.nesterov)
        return config


@_register
class Adam(_PyoptLegacyOptimizer):
    """Adam with legacy Keras' defaults, slots (``m``, ``v``, ``vhat``) and formula::

        lr_t = lr*sqrt(1-beta_2^t)/(1-beta_1^t)                       (t = iterations + 1)
        m = beta_1*m + (1-beta_1)*g;  v = beta_2*v + (1-beta_2)*g^2;  [vhat = max(vhat, v)]
        p = p - lr_t*m/(sqrt(v or vhat) + epsilon)

    Args:
      learning_rate: float >= 0 (default 0.001), a ``LearningRateSchedule`` or a callable;
        ``lr`` is an alias.
      beta_1, beta_2: Python floats in [0, 1) (defaults 0.9, 0.999).
      epsilon: > 0 (default 1e-7; 0 or None mean ``tf_keras.backend.epsilon()``, as in Keras).
      amsgrad: keep ``vhat = max(vhat, v)`` and use it in place of ``v``.
      backend: ``"auto"``, ``"fused"`` or ``"tf"`` (see :mod:`pyopt.ops`).
      **kwargs: ``clipnorm`` (fused into the update), ``clipvalue``, ``global_clipnorm``,
        ``decay``, ``lr`` (the base class's).
    """

    _CONSTANT_HYPERS = {"beta_1": ADAM.param("beta_1"), "beta_2": ADAM.param("beta_2")}

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        name="Adam",
        *,
        backend="auto",
        **kwargs,
    ):
        super().__init__(name, learning_rate, backend=backend, **kwargs)
        self._set_hyper("beta_1", beta_1)
        self._set_hyper("beta_2", beta_2)
        self.epsilon = _rules.check(ADAM.param("epsilon"), epsilon or tf_keras.backend.epsilon())
        self.amsgrad = _rules.check_flag("amsgrad", amsgrad)

    def _create_slots(self, var_list):
        # m for all variables, then v, then vhat: the order of legacy Adam's slot variables (the table's names)
        for slot in ADAM.slots:
            if self.amsgrad or not slot.optional:
                for var in var_list:
                    self.add_slot(var, slot.name)

    def _update(self, grad, var, c, **options):
        pyopt_ops.adam(
            var,
            grad,
            self.get_slot(var, "m"),
            self.get_slot(var, "v"),
            lr=c["lr_t"],
            beta_1=c["beta_1"],
            beta_2=c["beta_2"],
            epsilon=self.epsilon,
            step=c["step"],
            vhat=self.get_slot(var, "vhat") if self.amsgrad else None,
            **options,
        )

    def _sparse_lazy(self):
        # Legacy Adam's sparse update is the dense step with the densified gradient (m and v
        # decay everywhere, every row moves)
        return False

    def get_config(self):
        config = super().get_config()
        config.update(
            beta_1=self._serialize_hyperparameter("beta_1"),
            beta_2=self._serialize_hyperparameter("beta_2"),
            epsilon=self.epsilon,
            amsgrad=self.amsgrad,
        )
        return config


@_register
class Adagrad(_PyoptLegacyOptimizer):
    """Adagrad with legacy Keras' defaults, slot (``accumulator``) and config, in pyopt's form::

        acc = acc + g^2;  p = p - lr*g/sqrt(acc + epsilon)

    Legacy ``Adagrad`` (TF's ``ResourceApplyAdagradV2``) computes ``lr*g/(sqrt(acc) + epsilon)``.
    The two steps differ by the relative amount ``|sqrt(acc + eps)/(sqrt(acc) + eps) - 1|``,
    about ``eps*|1/(2*acc) - 1/sqrt(acc)|``: at most 1.84e-7 for ``acc >= 0.1`` and
    ``epsilon=1e-7`` (legacy's defaults: the accumulators start at 0.1 and only grow), under
    two float32 ulps of the step, so float32 results are legacy's up to rounding (float64 ones
    differ by up to ``1.84e-7*lr`` per step). With a smaller ``initial_accumulator_value`` the
    difference grows as ``eps/(2*acc)`` (4e-6 at 0.01); with 0 and gradients near
    ``sqrt(epsilon)`` or smaller the two differ outright (legacy ``g/(|g| + eps)``, pyopt
    ``g/sqrt(g^2 + eps)`` on the first step).

    Args:
      learning_rate: float >= 0 (default 0.001), a ``LearningRateSchedule`` or a callable;
        ``lr`` is an alias.
      initial_accumulator_value: >= 0 (default 0.1), the accumulators' start.
      epsilon: > 0 (default 1e-7; 0 or None mean ``tf_keras.backend.epsilon()``, as in Keras).
      backend: ``"auto"``, ``"fused"`` or ``"tf"`` (see :mod:`pyopt.ops`).
      **kwargs: ``clipnorm`` (fused into the update), ``clipvalue``, ``global_clipnorm``,
        ``decay``, ``lr`` (the base class's).
    """

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        name="Adagrad",
        *,
        backend="auto",
        **kwargs,
    ):
        super().__init__(name, learning_rate, backend=backend, **kwargs)
        self._initial_accumulator_value = _rules.check(_rules.INITIAL_ACCUMULATOR, initial_accumulator_value)
        self.epsilon = _rules.check(ADAGRAD.param("epsilon"), epsilon or tf_keras.backend.epsilon())

    def _create_slots(self, var_list):
        for var in var_list:
            init = tf.compat.v1.constant_initializer(self._initial_accumulator_value, dtype=var.dtype.base_dtype)
            self.add_slot(var, "accumulator", init)

    def _update(self, grad, var, c, **options):
        # sparse: on the touched rows only, as legacy Adagrad (ResourceSparseApplyAdagradV2)
        pyopt_ops.adagrad(var, grad, self.get_slot(var, "accumulator"), lr=c["lr_t"], epsilon=self.epsilon, **options)

    def get_config(self):
        config = super().get_config()
        config.update(initial_accumulator_value=self._initial_accumulator_value, epsilon=self.epsilon)
        return config


@_register
class RMSprop(_PyoptLegacyOptimizer):
    """RMSprop with legacy Keras' defaults, slots (``rms``, ``momentum``, ``mg``) and config::

        v = rho*v + (1-rho)*g^2                 (slot "rms")
        a = rho*a + (1-rho)*g                   (centered; slot "mg")
        inc = lr*g/sqrt(v + epsilon)            (centered: sqrt(v - a^2 + epsilon))
        b = momentum*b + inc;  p = p - b        (momentum > 0; slot "momentum"; else p = p - inc)

    With ``momentum > 0`` this is legacy ``RMSprop``'s formula (TF's ``ApplyRMSProp`` and
    ``ApplyCenteredRMSProp``), up to rounding. With ``momentum=0`` legacy ``RMSprop`` computes
    ``inc = lr*g/(sqrt(v) + epsilon)`` (centered: ``sqrt(v - a^2) + epsilon``) and pyopt's
    rule, which puts ``epsilon`` under the root, does not: the step differs by the relative
    amount ``|sqrt(d + eps)/(sqrt(d) + eps) - 1|``, about ``eps*|1/(2*d) - 1/sqrt(d)|`` for
    the denominator ``d`` (``v``, or ``v - a^2``). That is float rounding only while ``d``
    stays well above ``epsilon`` (1e-4 relative at ``d = 5e-4``, gradients of about 0.07 with
    ``rho=0.9``); for smaller gradients pyopt's steps are smaller than legacy's (at
    ``d = epsilon``, 0.7 of them), as in Keras 3's ``RMSprop``.

    ``momentum`` decides at construction whether there are momentum slots (as legacy): an
    optimizer made with ``momentum=0`` refuses a later ``momentum`` other than 0 (legacy ignores it).

    Args:
      learning_rate: float >= 0 (default 0.001), a ``LearningRateSchedule`` or a callable;
        ``lr`` is an alias.
      rho: Python float in [0, 1] (default 0.9).
      momentum: Python float in [0, 1] (default 0.0).
      epsilon: > 0 (default 1e-7; 0 or None mean ``tf_keras.backend.epsilon()``, as in Keras).
      centered: divide by ``v - a^2`` (the centered second moment) in place of ``v``.
      backend: ``"auto"``, ``"fused"`` or ``"tf"`` (see :mod:`pyopt.ops`).
      **kwargs: ``clipnorm`` (fused into the update), ``clipvalue``, ``global_clipnorm``,
        ``decay``, ``lr`` (the base class's).
    """

    _CONSTANT_HYPERS = {"rho": RMSPROP.param("rho"), "momentum": RMSPROP.param("momentum")}

    def __init__(
        self,
        learning_rate=0.001,
        rho=0.9,
        momentum=0.0,
        epsilon=1e-7,
        centered=False,
        name="RMSprop",
        *,
        backend="auto",
        **kwargs,
    ):
        super().__init__(name, learning_rate, backend=backend, **kwargs)
        self._set_hyper("rho", rho)
        self._momentum = _rules.check(RMSPROP.param("momentum"), momentum) > 0
        self._set_hyper("momentum", momentum)
        self.epsilon = _rules.check(RMSPROP.param("epsilon"), epsilon or tf_keras.backend.epsilon())
        self.centered = _rules.check_flag("centered", centered)

    def _set_hyper(self, name, value):
        if name == "momentum" and hasattr(self, "_momentum") and not self._momentum:
            if _rules.check(RMSPROP.param("momentum"), value) != 0:
                raise ValueError(
                    f"momentum must stay 0 in an RMSprop made without momentum (it has no momentum slots), got "
                    f"{_rules.show(value)}; make the optimizer with momentum > 0"
                )
        super()._set_hyper(name, value)

    def _create_slots(self, var_list):
        # rms for all variables, then momentum, then mg: legacy RMSprop's order
        for var in var_list:
            self.add_slot(var, "rms")
        if self._momentum:
            for var in var_list:
                self.add_slot(var, "momentum")
        if self.centered:
            for var in var_list:
                self.add_slot(var, "mg")

    def _update(self, grad, var, c, **options):
        pyopt_ops.rmsprop(
            var,
            grad,
            self.get_slot(var, "rms"),
            lr=c["lr_t"],
            rho=c["rho"],
            momentum=c["momentum"],
            epsilon=self.epsilon,
            momentum_buffer=self.get_slot(var, "momentum") if self._momentum else None,
            average_gradient=self.get_slot(var, "mg") if self.centered else None,
            **options,
        )

    def _sparse_lazy(self):
        # Legacy RMSprop with momentum (TF's sparse kernels) moves only the touched rows and their
        # slots. Without momentum it decays rms (and mg) everywhere and moves the touched rows:
        # the dense step with the densified gradient.
        return self._momentum

    def get_config(self):
        config = super().get_config()
        config.update(
            rho=self._serialize_hyperparameter("rho"),
            momentum=self._serialize_hyperparameter("momentum"),
            epsilon=self.epsilon,
            centered=self.centered,
        )
        return config
