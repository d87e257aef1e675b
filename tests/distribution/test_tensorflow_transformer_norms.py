"""The transformer normalization layers under `tf.distribute`: two logical
CPU replicas (set up in a fresh interpreter, before TensorFlow picks its
devices). The update counter set through the backward pass advances once
per update, not once per replica, and the state is finite."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import numpy as np, keras
    from keras_batchopt import layers
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 5, 8)).astype("float32")
    y = rng.normal(size=(24, 5, 2)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((5, 8))
        power = layers.PowerNormalization(warmup_steps=1)
        unified = layers.UnifiedNormalization(warmup_steps=1)
        progressive = layers.ProgressiveRepBN(total_steps=4)
        h = progressive(unified(power(inputs)))
        model = keras.Model(inputs, keras.layers.Dense(2)(h))
        model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "steps": float(progressive.steps.numpy()),
        "iterations": int(power.iterations.numpy()),
        "finite": all(np.isfinite(w.numpy()).all() for w in model.weights),
        "moved": float(np.abs(power.gradient_ema.numpy()).max()),
    }))
    """
)


def test_mirrored_strategy_two_replicas():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["steps"] == 3.0  # 24 samples, global batch 8
    assert result["iterations"] == 3
    assert result["finite"]
    assert result["moved"] > 0
