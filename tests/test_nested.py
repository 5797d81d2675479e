from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from reds_tf.models import dnn, submodel
from reds_tf.nested import build_nested, nested_accuracy, predict_nested, to_plain
from reds_tf.training import JointTrainer, finetune_joint, loss_weights

WIDTHS = [{"fc1": 4, "fc2": 3}, {"fc1": 8, "fc2": 6}, {"fc1": 12, "fc2": 10}]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    m = dnn((5, 5, 1), [12, 10], 4)
    rng = np.random.default_rng(seed)
    for layer in m.layers:
        if layer.get_weights():
            layer.set_weights(
                [rng.normal(size=w.shape).astype(np.float32) * 0.4 for w in layer.get_weights()]
            )
    return m


def _x(n=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 5, 5, 1)).astype(np.float32)


def test_one_pass_returns_every_submodel():
    m = _model()
    nested = build_nested(m, WIDTHS)
    x = _x()
    outs = predict_nested(nested, x)
    assert len(outs) == 3
    for w, o in zip(WIDTHS, outs, strict=True):
        sub = submodel(m, {**w, "logits": 4})
        np.testing.assert_allclose(o, sub.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(outs[-1], m.predict(x, verbose=0), atol=1e-5)


def test_single_submodel_and_accuracy():
    m = _model(1)
    nested = build_nested(m, [{}])
    x = _x()
    y = np.argmax(m.predict(x, verbose=0), axis=1)
    assert nested_accuracy(nested, x, y) == [1.0]


def test_branch_gradient_touches_only_its_prefix():
    m = _model(2)
    nested = build_nested(m, WIDTHS)
    x = tf.constant(_x(8))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(nested(x)[0])  # smallest submodel only
    g1, g2 = tape.gradient(loss, [nested.get_layer("fc1").kernel, nested.get_layer("fc2").kernel])
    assert np.all(g1.numpy()[:, 4:] == 0) and np.any(g1.numpy()[:, :4] != 0)
    assert np.all(g2.numpy()[4:, :] == 0) and np.all(g2.numpy()[:, 3:] == 0)


def test_to_plain_round_trip_carries_trained_weights():
    m = _model(3)
    nested = build_nested(m, WIDTHS)
    k, b = nested.get_layer("fc2").get_weights()
    nested.get_layer("fc2").set_weights([k + 1.0, b])
    plain = to_plain(nested, m)
    assert not any(isinstance(layer, type(nested.get_layer("fc2"))) for layer in plain.layers)
    np.testing.assert_array_equal(plain.get_layer("fc2").kernel.numpy(), k + 1.0)
    np.testing.assert_array_equal(m.get_layer("fc2").kernel.numpy(), k)  # template untouched


def test_loss_weights_formula():
    p = [0.1, 0.4, 1.0]
    w = loss_weights(p)
    s = sum(math.sqrt(v) for v in p)
    assert w == pytest.approx([math.sqrt(v) / s for v in p])
    assert sum(w) == pytest.approx(1.0)


def test_joint_loss_without_distillation_is_weighted_ce():
    m = _model(4)
    nested = build_nested(m, WIDTHS)
    tr = JointTrainer(nested, [0.2, 0.3, 0.5], distill=False)
    x, y = _x(16), np.arange(16) % 4
    logits = tr(x)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    want = sum(w * float(ce(y, z)) for w, z in zip([0.2, 0.3, 0.5], logits, strict=True))
    assert float(tr.joint_loss(tf.constant(y), logits)) == pytest.approx(want, rel=1e-5)
    # Distillation changes only the smaller submodels' terms (teacher = full model).
    td = JointTrainer(nested, [0.0, 0.0, 1.0], distill=True, alpha=0.7)
    assert float(td.joint_loss(tf.constant(y), logits)) == pytest.approx(float(ce(y, logits[-1])))


def test_joint_finetuning_lowers_the_loss():
    m = _model(5)
    x = _x(256, seed=1)
    y = np.argmax(x.reshape(256, -1)[:, :4], axis=1)  # learnable labels
    nested = build_nested(m, WIDTHS)
    before = nested_accuracy(nested, x, y)
    hist = finetune_joint(
        nested,
        x,
        y,
        [0.2, 0.5, 1.0],
        epochs=5,
        batch_size=32,
        lr=1e-2,
        schedule="cosine",
        distill=True,
        temperature=2.0,
        alpha=0.5,
        seed=0,
        verbose=0,
    )
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert set(hist.history) >= {"acc0", "acc1", "acc2"}
    after = nested_accuracy(nested, x, y)
    assert sum(after) > sum(before)


def _kd(teacher_logits, z, t: float) -> float:
    """KL(softmax(teacher / t) || softmax(z / t)), batch mean, in NumPy."""

    def softmax(a):
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(np.asarray(teacher_logits) / t), softmax(np.asarray(z) / t)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def test_joint_loss_with_a_frozen_teacher_distills_every_submodel():
    nested = build_nested(_model(4), WIDTHS)
    x, y = _x(16), np.arange(16) % 4
    logits = [z.numpy() for z in JointTrainer(nested, [1 / 3] * 3)(x)]
    teacher = np.random.default_rng(7).normal(size=logits[0].shape).astype(np.float32) * 3
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pi, a, t = [0.2, 0.3, 0.5], 0.7, 2.0
    tr = JointTrainer(nested, pi, distill=True, alpha=a, temperature=t)
    want = sum(
        w * ((1 - a) * float(ce(y, z)) + a * t * t * _kd(teacher, z, t))
        for w, z in zip(pi, logits, strict=True)
    )
    got = float(tr.joint_loss(tf.constant(y), logits, tf.constant(teacher)))
    assert got == pytest.approx(want, rel=1e-4)
    # Without a teacher the full submodel (last) has no distillation term.
    inplace = sum(
        w * ((1 - a) * float(ce(y, z)) + a * t * t * _kd(logits[-1], z, t))
        for w, z in zip(pi[:-1], logits[:-1], strict=True)
    ) + pi[-1] * float(ce(y, logits[-1]))
    assert float(tr.joint_loss(tf.constant(y), logits)) == pytest.approx(inplace, rel=1e-4)


def test_finetuning_with_a_teacher_leaves_the_teacher_unchanged():
    m = _model(5)
    teacher = _model(5)
    before = [w.copy() for w in teacher.get_weights()]
    x = _x(128, seed=1)
    y = np.argmax(x.reshape(128, -1)[:, :4], axis=1)
    nested = build_nested(m, WIDTHS)
    start = [w.numpy().copy() for w in nested.trainable_variables]
    hist = finetune_joint(
        nested, x, y, [0.2, 0.5, 1.0], epochs=2, batch_size=32, lr=1e-2, schedule="cosine",
        distill=True, temperature=2.0, alpha=0.5, seed=0, verbose=0, teacher=teacher,
    )  # fmt: skip
    assert np.isfinite(hist.history["loss"]).all()
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights(), strict=True))
    moved = [
        not np.array_equal(a, v.numpy())
        for a, v in zip(start, nested.trainable_variables, strict=True)
    ]
    assert any(moved)  # the student did train


def test_train_and_test_steps_use_the_teacher():
    nested = build_nested(_model(4), WIDTHS)
    teacher = _model(9)
    x, y = _x(32), np.arange(32) % 4
    tr = JointTrainer(nested, [0.2, 0.3, 0.5], distill=True, alpha=0.7, teacher=teacher)
    tr.compile(optimizer=keras.optimizers.SGD(1e-12))  # a step that changes nothing
    want = float(tr.joint_loss(tf.constant(y), tr(x), teacher(x)))
    assert want != pytest.approx(float(tr.joint_loss(tf.constant(y), tr(x))), rel=1e-3)
    fit = tr.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert fit.history["loss"][0] == pytest.approx(want, rel=1e-4)
    assert tr.evaluate(x, y, batch_size=32, verbose=0)[0] == pytest.approx(want, rel=1e-4)


def test_resnet_branches_are_the_sliced_submodels_and_finetune():
    """ResNet-8 (identity and projection shortcuts): each nested branch equals
    the prefix-sliced plain submodel, tied layers at their group's width; one
    joint fine-tuning epoch runs and to_plain carries the weights back."""
    from reds_tf.models import resnet

    keras.utils.set_random_seed(0)
    m = resnet(
        (12, 12, 3),
        {"filters": 8, "kernel": [3, 3], "strides": [1, 1]},
        [{"filters": 8, "strides": [1, 1]}, {"filters": 12, "strides": [2, 2]}],
        4,
    )
    rng = np.random.default_rng(1)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])  # fmt: skip
    widths = [
        {"conv1": 4, "s1_conv1": 4, "s2_conv1": 4, "s2_conv2": 4},
        {"conv1": 8, "s1_conv1": 4, "s2_conv1": 8, "s2_conv2": 8},
        {"conv1": 8, "s1_conv1": 8, "s2_conv1": 12, "s2_conv2": 12},
    ]
    nested = build_nested(m, widths)
    x = rng.normal(size=(16, 12, 12, 3)).astype(np.float32)
    for w, o in zip(widths, predict_nested(nested, x), strict=True):
        sub = submodel(m, w)
        assert sub.get_layer("s1_conv2").filters == w["conv1"]  # tied to the stem
        assert sub.get_layer("s2_proj").filters == w["s2_conv2"]
        np.testing.assert_allclose(o, sub.predict(x, verbose=0), atol=1e-4, rtol=1e-4)
    y = rng.integers(0, 4, 64)
    xt = rng.normal(size=(64, 12, 12, 3)).astype(np.float32)
    hist = finetune_joint(
        nested, xt, y, [0.2, 0.5, 1.0], epochs=1, batch_size=32, lr=1e-3, schedule="constant",
        distill=True, temperature=2.0, alpha=0.5, seed=0, verbose=0,
    )  # fmt: skip
    assert np.isfinite(hist.history["loss"]).all()
    plain = to_plain(nested, m)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), predict_nested(nested, x)[-1], atol=1e-4, rtol=1e-4
    )
