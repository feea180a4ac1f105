"""SGD (plain, momentum, Nesterov) as a drop-in for ``keras.optimizers.SGD``, and the chapter's names."""

from __future__ import annotations

import keras

from .. import _rules
from .._rules import GRADIENT_DESCENT, MOMENTUM
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.01)  # Keras's default, told apart from a learning_rate the caller gives

_MU = MOMENTUM.param("momentum")


@keras.saving.register_keras_serializable(package="pyopt")
class SGD(PyoptOptimizer, keras.optimizers.SGD):
    """Gradient descent, with momentum when ``momentum > 0``, one fused call per step::

        momentum == 0:  p = p - lr*wd*p - lr*g
        momentum  > 0:  m = momentum*m - lr*g
                        p = p - lr*wd*p + m                      (nesterov: + momentum*m - lr*g)

    Same arguments, defaults, slots and results as ``keras.optimizers.SGD`` (``momentum`` in
    [0, 1], else Keras's error; ints are accepted too, NaN is not), plus ``lr`` (alias of
    ``learning_rate``), ``backend`` and ``skip_nonfinite`` (see :class:`PyoptOptimizer`).
    Other keyword arguments are Keras's.
    """

    def __init__(
        self,
        learning_rate=_LR,
        momentum=0.0,
        nesterov=False,
        *,
        lr=None,
        backend="auto",
        skip_nonfinite=False,
        **kwargs,
    ):
        # Keras refuses a momentum that is no float in [0, 1] with its own message; ints are taken as floats
        super().__init__(
            learning_rate,
            momentum=float(momentum) if _rules.is_number(momentum) else momentum,
            nesterov=nesterov,
            lr=lr,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            **kwargs,
        )
        _rules.check(_MU, self.momentum)  # NaN passes Keras's check
        _rules.check_flag("nesterov", nesterov)

    def _rule(self):
        return GRADIENT_DESCENT if self.momentum == 0 else MOMENTUM

    def _flags(self):
        return {} if self.momentum == 0 else dict(nesterov=self.nesterov)

    def _slot_lists(self, variables):
        return [] if self.momentum == 0 else self._slots(variables, self.momentums)  # Keras's velocities


@keras.saving.register_keras_serializable(package="pyopt")
class GradientDescent(SGD):
    """The chapter's clipped gradient descent: ``p = p - lr*g`` (``SGD`` without momentum).

    ``GradientDescent(lr, clipnorm=None)``; every other ``SGD`` keyword works too.
    """

    def __init__(self, learning_rate=_LR, clipnorm=None, *, lr=None, **kwargs):
        super().__init__(learning_rate, momentum=0.0, clipnorm=clipnorm, lr=lr, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["momentum"], config["nesterov"]
        return config


@keras.saving.register_keras_serializable(package="pyopt")
class Momentum(SGD):
    """The chapter's momentum: ``m = beta*m - lr*g; p = p + m`` (nesterov: ``p = p + beta*m - lr*g``).

    ``Momentum(lr, beta=0.9, clipnorm=None, nesterov=False)`` is ``SGD(lr, momentum=beta,
    nesterov=nesterov, clipnorm=clipnorm)``; every other ``SGD`` keyword works too.
    """

    def __init__(self, learning_rate=_LR, beta=0.9, clipnorm=None, nesterov=False, *, lr=None, **kwargs):
        super().__init__(
            learning_rate,
            momentum=_rules.check(_MU, beta, name="beta"),
            nesterov=nesterov,
            clipnorm=clipnorm,
            lr=lr,
            **kwargs,
        )

    @property
    def beta(self) -> float:
        return self.momentum

    def get_config(self):
        config = super().get_config()
        config["beta"] = config.pop("momentum")
        return config
