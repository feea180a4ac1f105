"""The chapter's model: a multilayer perceptron as a serialisable Keras 3 model."""

from __future__ import annotations

import numbers

from ._deps import missing

try:
    import keras
except ImportError as exc:
    raise missing("pyopt.models", exc) from exc

__all__ = ["MLP"]


@keras.saving.register_keras_serializable(package="pyopt")
class MLP(keras.Model):
    """Multilayer perceptron: ``Dense(h_1, act) -> ... -> Dense(h_k, act) -> Dense(num_targets)``.

    ``outputs = last_linear(feature_extractor(x))``, with ``feature_extractor`` the stack of
    hidden ``Dense`` layers (Glorot-uniform kernels, zero biases) and ``last_linear`` a linear
    ``Dense`` layer. The chapter's model is ``MLP(num_hidden_units, 1)`` on 13 features.

    Args:
        num_hidden_units: width of the hidden layer (int) or of each hidden layer (list of ints,
            possibly empty: a linear model).
        num_targets: number of outputs.
        hidden_activation: activation of the hidden layers (any Keras activation name).
        seed: seed of the weight initialisation; the same seed gives the same initial weights.
            ``None`` draws from Keras' global generator (see ``keras.utils.set_random_seed``).
    """

    def __init__(self, num_hidden_units, num_targets: int = 1, hidden_activation="relu", seed=None, **kwargs):
        super().__init__(**kwargs)
        hidden = [num_hidden_units] if isinstance(num_hidden_units, numbers.Integral) else num_hidden_units
        if not isinstance(hidden, (list, tuple)):
            raise TypeError(f"num_hidden_units must be an int or a list of ints, got {type(num_hidden_units).__name__}")
        _check_units("num_hidden_units", hidden)
        _check_units("num_targets", [num_targets])
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.num_hidden_units = [int(u) for u in hidden]
        self.num_targets = int(num_targets)
        self.hidden_activation = keras.activations.serialize(keras.activations.get(hidden_activation))
        self.seed = seed

        def kernel_init(i):
            # One distinct seed per layer: a seeded Keras initializer repeats its values.
            return "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed + i)

        hidden_layers = [
            keras.layers.Dense(units, activation=hidden_activation, kernel_initializer=kernel_init(i))
            for i, units in enumerate(self.num_hidden_units)
        ]
        self.feature_extractor = (
            keras.Sequential(hidden_layers, name="feature_extractor")
            if hidden_layers
            else keras.layers.Identity(name="feature_extractor")  # no hidden layer: a linear model
        )
        self.last_linear = keras.layers.Dense(
            self.num_targets, kernel_initializer=kernel_init(len(self.num_hidden_units)), name="last_linear"
        )

    def call(self, inputs):
        return self.last_linear(self.feature_extractor(inputs))

    def hidden_features(self, inputs):
        """The last hidden layer's activations (the input of ``last_linear``)."""
        return self.feature_extractor(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_hidden_units=list(self.num_hidden_units),
            num_targets=self.num_targets,
            hidden_activation=self.hidden_activation,
            seed=self.seed,
        )
        return config


def _check_units(name, values):
    for units in values:
        if isinstance(units, bool) or not isinstance(units, numbers.Integral):
            raise TypeError(f"{name} must be made of ints, got {units!r}")
        if units < 1:
            raise ValueError(f"{name} must be >= 1, got {units}")
