from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf.importance import taylor_scores
from reds_tf.models import dnn


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 1), dtype=np.float32), rng.integers(0, 4, n)


def test_scores_match_summed_gradient_formula():
    keras.utils.set_random_seed(0)
    m = dnn((6, 6, 1), [10, 8], 4)
    x, y = _data()
    s = taylor_scores(m, x, y, ["fc1", "fc2"], batches=3, batch_size=32, seed=5)
    # Independent recomputation: same sample order, eager per-batch gradients.
    idx = np.random.default_rng(5).permutation(len(x))[:96]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    g = {n: 0.0 for n in ("fc1", "fc2")}
    for b in range(3):
        sel = idx[32 * b : 32 * (b + 1)]
        with tf.GradientTape() as tape:
            out = loss(y[sel], m(x[sel]))
        grads = tape.gradient(out, [m.get_layer("fc1").kernel, m.get_layer("fc2").kernel])
        g["fc1"] = g["fc1"] + grads[0].numpy()
        g["fc2"] = g["fc2"] + grads[1].numpy()
    for n in ("fc1", "fc2"):
        w = m.get_layer(n).kernel.numpy()
        want = np.abs(w * g[n]).sum(axis=0)
        assert s[n].shape == (m.get_layer(n).units,)
        np.testing.assert_allclose(s[n], want, rtol=1e-4, atol=1e-9)


def test_disconnected_units_score_zero():
    keras.utils.set_random_seed(1)
    m = dnn((6, 6, 1), [10, 8], 4)
    k1, b1 = m.get_layer("fc1").get_weights()
    k1[:, 3] = 0.0  # unit 3 has no incoming weights
    m.get_layer("fc1").set_weights([k1, b1])
    k2, b2 = m.get_layer("fc2").get_weights()
    k2[7, :] = 0.0  # fc1 unit 7 feeds nothing: its gradient is zero
    m.get_layer("fc2").set_weights([k2, b2])
    x, y = _data()
    s = taylor_scores(m, x, y, ["fc1", "fc2"], batches=2, batch_size=48)
    assert s["fc1"][3] == 0.0 and s["fc1"][7] == 0.0
    assert s["fc1"].sum() > 0  # (other units may be dead ReLUs on this data)
    assert np.all(s["fc2"] >= 0)


def test_batches_are_capped_by_data():
    keras.utils.set_random_seed(2)
    m = dnn((6, 6, 1), [5], 4)
    x, y = _data(40)
    a = taylor_scores(m, x, y, ["fc1"], batches=100, batch_size=16)
    b = taylor_scores(m, x, y, ["fc1"], batches=3, batch_size=16)
    np.testing.assert_allclose(a["fc1"], b["fc1"], rtol=1e-5)  # 40 samples = 3 batches either way
