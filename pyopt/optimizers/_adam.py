"""Adam as a drop-in for ``keras.optimizers.Adam``, on ``pyopt.ops.adam_multi``."""

from __future__ import annotations

import keras

from .. import ops as pyopt_ops
from ._base import PyoptOptimizer, _Default, check_number


@keras.saving.register_keras_serializable(package="pyopt")
class Adam(PyoptOptimizer, keras.optimizers.Adam):
    """Adam, Keras 3's "epsilon hat" form, one fused call per step::

        t = iterations + 1
        alpha = lr*sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m = m + (g - m)*(1 - beta_1)
        v = v + (g^2 - v)*(1 - beta_2)
        vhat = max(vhat, v)                       (amsgrad; used in place of v)
        p = p - lr*wd*p - alpha*m / (sqrt(v) + epsilon)

    Same arguments, defaults, slots and results as ``keras.optimizers.Adam`` (``beta_1``,
    ``beta_2`` in [0, 1), ``epsilon`` > 0 are checked; Keras accepts ``epsilon=0``, whose
    first step divides 0 by 0 where a gradient is 0), plus ``lr`` (alias of
    ``learning_rate``), ``backend`` and ``skip_nonfinite`` (see :class:`PyoptOptimizer`).
    All other keyword arguments (``weight_decay``, ``clipnorm``, ``global_clipnorm``,
    ``clipvalue``, ``use_ema``, ``loss_scale_factor``, ``gradient_accumulation_steps``, ...)
    are Keras's.
    """

    def __init__(self, learning_rate=_Default(0.001), beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, *,
                 lr=None, backend="auto", skip_nonfinite=False, **kwargs):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad, lr=lr,
                         backend=backend, skip_nonfinite=skip_nonfinite, **kwargs)
        # Keras checks none of these; as floats, for the update call
        self.beta_1 = check_number("beta_1", beta_1, high=1.0, high_open=True)
        self.beta_2 = check_number("beta_2", beta_2, high=1.0, high_open=True)
        self.epsilon = check_number("epsilon", epsilon, low_open=True)  # the core divides by sqrt(v)+eps
        if not isinstance(amsgrad, bool):
            raise TypeError(f"amsgrad must be a bool, got {type(amsgrad).__name__}")

    def _apply_rule(self, variables, grads, learning_rate, **options):
        slot_lists = [self._momentums, self._velocities] + ([self._velocity_hats] if self.amsgrad else [])
        ms, vs, *vhats = self._slots(variables, *slot_lists)
        return pyopt_ops.adam_multi(
            variables, grads, ms, vs, vhats=vhats[0] if vhats else None, lr=learning_rate, beta_1=self.beta_1,
            beta_2=self.beta_2, epsilon=self.epsilon, step=self.iterations + 1, backend=self._backend, **options,
        )
