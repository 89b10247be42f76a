"""Importing Keras on the TensorFlow backend with the harness's thread count.

``keras_tf()`` sets ``KERAS_BACKEND=tensorflow`` before Keras is imported and TF's
intra-op threads to ``configured_threads()`` (inter-op 1, as ``bench.core.threads`` sets for
every backend) before TF runs its first op; TF32 is turned off (a no-op on CPU, recorded).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bench.core.threads import configured_threads

_STATE: dict[str, Any] = {}


def keras_tf() -> tuple[Any, Any]:
    """``(tensorflow, keras)``, configured once per process."""
    if "keras" in _STATE:
        return _STATE["tf"], _STATE["keras"]
    if "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
        if backend != "tensorflow":
            raise NotImplementedError(f"keras: already imported with backend {backend!r}, need 'tensorflow'")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf

    n = configured_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        _STATE["threads_note"] = "set"
    except RuntimeError as e:  # TF already ran an op in this process: keep what it has
        _STATE["threads_note"] = f"not set ({e})"
    tf.config.experimental.enable_tensor_float_32_execution(False)
    import keras

    _STATE.update(tf=tf, keras=keras, threads=n)
    return tf, keras


def onednn_enabled() -> bool | None:
    """TF's own answer (TF_ENABLE_ONEDNN_OPTS, default on only on AVX-512 class CPUs)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:
        return None


def tf_settings() -> dict:
    tf, keras = keras_tf()
    return {
        "library": f"keras {keras.__version__} / tensorflow {tf.__version__}",
        "backend": keras.backend.backend(),
        "device": "cpu",
        "configured_threads": _STATE["threads"],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "threads_set": _STATE["threads_note"],
        "onednn": onednn_enabled(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (build default)"),
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "layout": "NHWC (channels-last); dense-after-flatten rows permuted NCHW<->NHWC",
        "cross_entropy": "CategoricalCrossentropy on softmax output, computed from logits by Keras",
    }
