"""Keras 3 implementation on the TensorFlow backend: ``keras.Sequential``, ``tf.GradientTape``,
``keras.optimizers.SGD``. Importing this package imports neither Keras nor TensorFlow."""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()


def available() -> tuple[bool, str]:
    try:
        from .setup import keras_tf

        tf, keras = keras_tf()
        return True, f"keras {keras.__version__} (tensorflow {tf.__version__}, {keras.backend.backend()} backend)"
    except Exception as e:
        return False, f"keras/tensorflow unavailable: {type(e).__name__}: {e}"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import KerasModel

    return KerasModel(spec, params, dtype, seed=seed)


def settings() -> dict:
    from .model import DEFAULT_TRAIN_STEP
    from .setup import tf_settings

    return {**tf_settings(), "train_step": DEFAULT_TRAIN_STEP}
