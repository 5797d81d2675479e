"""Training: base model, joint fine-tuning of the nested submodels, scratch baseline.

Joint fine-tuning minimises ``sum_i pi_i * L_i`` over the K submodels with the
paper's weights ``pi_i = sqrt(p_i) / sum_j sqrt(p_j)`` (``p_i`` = fraction of
the parameters submodel i uses). With distillation on, every submodel but the
full one uses ``L_i = (1 - alpha) * CE(y, z_i) + alpha * T^2 * KL(q_full || q_i)``
where ``q = softmax(z / T)`` and the full model's distribution is a constant
(stop-gradient) target taken from the same forward pass ("in-place"
distillation): small submodels learn the full model's soft labels, which
regularises them where they lose most. With a frozen ``teacher`` model (the
permuted base model, ``finetune.teacher: base``) the target is the teacher's
distribution instead and the full submodel distills from it too: the joint
updates then pull the full model back towards the function it started from.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf.checkpoints import EpochCheckpoint
from reds_tf.config import AugmentConfig
from reds_tf.data.stream import DiskArray
from reds_tf.inputs import predict_rows, row_reader
from reds_tf.models import compile_classifier

Log = Callable[[str], None]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic."""
    keras.utils.set_random_seed(int(seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except (AttributeError, RuntimeError):  # pragma: no cover - older TF
        pass


def learning_rate(base: float, schedule: str, steps: int) -> float | object:
    """A constant rate, or cosine decay from ``base`` to 0 over ``steps`` steps."""
    if schedule == "constant" or steps <= 0:
        return base
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, decay_steps=steps)
    raise ValueError(f"unknown schedule {schedule}")


def make_optimizer(
    name: str, lr: float | object, weight_decay: float = 0.0
) -> keras.optimizers.Optimizer:
    """``adam`` or ``sgd`` (Nesterov, momentum 0.9); ``weight_decay`` is decoupled.

    Keras applies decoupled decay as ``w -= lr * weight_decay * w`` each step,
    so with SGD it matches the usual L2 coefficient; with Adam it needs to be
    larger (the step is scaled by a rate ~100x smaller).
    """
    wd = float(weight_decay) or None
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=wd)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name}")


def _steps(n: int, batch_size: int, epochs: int) -> int:
    return math.ceil(n / batch_size) * epochs


def augment_batch(
    x: tf.Tensor,
    flip: bool,
    shift: int,
    seed: int | None = None,
    stateless_seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """Random horizontal flips and zero-padded shifts of up to ``shift`` pixels.

    Vectorised over the batch (one gather per axis), so it costs far less than
    the training step. ``x``: (batch, H, W, C) -> same shape. ``stateless_seed``
    (shape (2,) int): draw from it instead of TensorFlow's global generator, so
    the same seed gives the same augmentation in any process (resumed runs).
    """
    n = tf.shape(x)[0]
    h, w = int(x.shape[1]), int(x.shape[2])

    def uniform(shape, lo=0.0, hi=1.0, dtype=tf.float32, salt=0):
        if stateless_seed is None:
            return tf.random.uniform(shape, lo, hi, dtype=dtype, seed=seed)
        s = tf.cast(stateless_seed, tf.int64) + tf.constant([0, salt], tf.int64)
        return tf.random.stateless_uniform(shape, s, lo, hi, dtype=dtype)

    if flip:
        coin = uniform([n, 1, 1, 1]) < 0.5
        x = tf.where(coin, x[:, :, ::-1, :], x)
    if shift > 0:
        s = int(shift)
        padded = tf.pad(x, [[0, 0], [s, s], [s, s], [0, 0]])
        off = uniform([n, 2], 0, 2 * s + 1, dtype=tf.int32, salt=1)
        rows = off[:, :1] + tf.range(h)[None, :]  # (batch, H)
        cols = off[:, 1:] + tf.range(w)[None, :]  # (batch, W)
        x = tf.gather(padded, rows, axis=1, batch_dims=1)
        x = tf.gather(x, cols, axis=2, batch_dims=1)
    return x


def augmentation(flip: bool, shift: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """``augment_batch`` with fixed settings, as a batch -> batch function."""
    return lambda x: augment_batch(x, flip, shift)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def epoch_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    first_epoch: int,
    epochs: int,
    augment: AugmentConfig | None = None,
) -> tf.data.Dataset:
    """Mini-batches of (x, y) for epochs ``first_epoch`` .. ``epochs - 1``, one
    after the other, each epoch in its own random order (augmented when asked).

    The order and the augmentation of epoch e are functions of (seed, e) alone,
    not of what ran before in the process: a run resumed at epoch e from a
    checkpoint gets the batches an uninterrupted run gets. Fit it with
    ``steps_per_epoch=steps_per_epoch(len(x), batch_size)``.
    """
    n = len(x)
    rows, ys = row_reader(x), tf.constant(y)
    seed64 = tf.constant(int(seed), tf.int64)
    spe = steps_per_epoch(n, batch_size)

    def one_epoch(e: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([seed64, e])
        )
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        # Step number of each batch over the whole run: the augmentation's seed.
        steps = tf.data.Dataset.range(e * spe, (e + 1) * spe)
        return tf.data.Dataset.zip((batches, steps))

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    if augment is not None and augment.active:
        flip, shift = augment.flip, augment.shift

        def load(idx: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            xb = augment_batch(rows(idx), flip, shift, stateless_seed=tf.stack([seed64, step]))
            return xb, tf.gather(ys, idx)

    else:

        def load(idx: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return rows(idx), tf.gather(ys, idx)

    # A plain map: with op determinism on, tf.data would turn a parallel one
    # into this anyway (and log an error about it); prefetch overlaps it.
    ds = ds.map(load).prefetch(tf.data.AUTOTUNE)
    # Across workers every one builds the same batches and keeps its replicas'
    # slices of each (no files to shard).
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts)


def _fit_epochs(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    verbose: int | str,
    augment: AugmentConfig | None,
    checkpoint: EpochCheckpoint | None,
    variables: list[tf.Variable],
    saved: dict[str, object],
    strategy: tf.distribute.Strategy | None = None,
) -> keras.callbacks.History | None:
    """``model.fit`` over :func:`epoch_batches`, resumed from and saving to
    ``checkpoint`` (``saved``: the objects it holds; ``variables``: those the
    optimizer updates, to build its slots before a restore)."""
    first, callbacks = 0, []
    if checkpoint is not None:
        with _scope(strategy):
            model.optimizer.build(variables)  # its slots must exist to be restored
            first = checkpoint.restore(saved, epochs)
        callbacks.append(checkpoint.callback(saved))
    if first >= epochs:
        return None
    ds = epoch_batches(
        x, y, batch_size, seed=seed, first_epoch=first, epochs=epochs, augment=augment
    )
    return model.fit(
        ds,
        epochs=epochs,
        initial_epoch=first,
        steps_per_epoch=steps_per_epoch(len(x), batch_size),
        callbacks=callbacks,
        verbose=verbose,
    )


def _scope(strategy: tf.distribute.Strategy | None) -> contextlib.AbstractContextManager:
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fit_classifier(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: str,
    seed: int,
    verbose: int | str = "auto",
    augment: AugmentConfig | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    checkpoint: EpochCheckpoint | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.callbacks.History | None:
    """Train a plain logits classifier on cross-entropy (in place); with a
    ``checkpoint``, go on from its epoch and save one after every epoch
    (None returned when the checkpoint already covers every epoch).
    ``strategy``: train under it (``model`` must have been built in its scope;
    ``batch_size`` is global)."""
    set_seed(seed)
    rate = learning_rate(lr, schedule, _steps(len(x), batch_size, epochs))
    with _scope(strategy):
        compile_classifier(model, rate, make_optimizer(optimizer, rate, weight_decay))
    return _fit_epochs(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        verbose=verbose,
        augment=augment,
        checkpoint=checkpoint,
        variables=model.trainable_variables,
        saved={"model": model, "optimizer": model.optimizer},
        strategy=strategy,
    )


def accuracy(model: keras.Model, x: np.ndarray | DiskArray, y: np.ndarray) -> float:
    logits = predict_rows(model, x)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def loss_weights(param_fractions: Sequence[float]) -> list[float]:
    """The paper's ``pi_i = sqrt(p_i) / sum_j sqrt(p_j)``."""
    r = [math.sqrt(p) for p in param_fractions]
    s = sum(r)
    return [v / s for v in r]


class JointTrainer(keras.Model):
    """Wraps a nested model (input -> list of K logits) with the joint loss.

    ``fit`` shows the total loss and each submodel's training accuracy
    (``acc0`` = smallest).
    """

    def __init__(
        self,
        nested: keras.Model,
        weights: Sequence[float],
        *,
        distill: bool = True,
        temperature: float = 1.0,
        alpha: float = 0.5,
        teacher: keras.Model | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.nested = nested
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.pi = [float(w) for w in weights]
        self.distill = bool(distill)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        # Per example: a replica's share of a step is its sum over the global batch.
        self.ce = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accs = [
            keras.metrics.SparseCategoricalAccuracy(name=f"acc{i}") for i in range(len(self.pi))
        ]

    def call(self, x: tf.Tensor, training: bool | None = None) -> list[tf.Tensor]:
        out = self.nested(x, training=training)
        return out if isinstance(out, (list, tuple)) else [out]

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, *self.accs]

    def joint_loss(
        self,
        y: tf.Tensor,
        logits: Sequence[tf.Tensor],
        teacher_logits: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Scalar ``sum_i pi_i * L_i`` (see the module docstring).

        ``logits``: K tensors (batch, classes), smallest submodel first;
        ``teacher_logits`` (batch, classes): a frozen teacher's, which every
        submodel (the full one included) then distills from; None: the full
        submodel's own logits teach the smaller ones.
        """
        return tf.reduce_mean(self.example_losses(y, logits, teacher_logits))

    def example_losses(
        self,
        y: tf.Tensor,
        logits: Sequence[tf.Tensor],
        teacher_logits: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """``sum_i pi_i * L_i`` of each example, shape (batch,)."""
        t = self.temperature
        source = logits[-1] if teacher_logits is None else teacher_logits
        teacher = tf.stop_gradient(tf.nn.softmax(source / t))
        total = tf.zeros(tf.shape(y)[:1])
        students = len(logits) - (1 if teacher_logits is None else 0)
        for i, (pi, z) in enumerate(zip(self.pi, logits, strict=True)):
            li = self.ce(y, z)
            if self.distill and i < students and self.alpha > 0:
                log_q = tf.nn.log_softmax(z / t)
                kl = tf.reduce_sum(teacher * (tf.math.log(teacher + 1e-12) - log_q), axis=-1)
                li = (1.0 - self.alpha) * li + self.alpha * (t * t) * kl
            total += pi * li
        return total

    def _update(self, y: tf.Tensor, logits: Sequence[tf.Tensor], loss: tf.Tensor) -> dict:
        self.loss_tracker.update_state(loss)
        for m, z in zip(self.accs, logits, strict=True):
            m.update_state(y, z)
        return {m.name: m.result() for m in self.metrics}

    def _teacher_logits(self, x: tf.Tensor) -> tf.Tensor | None:
        # Inference mode: the teacher's BatchNorm keeps its moving statistics.
        return None if self.teacher is None else self.teacher(x, training=False)

    def train_step(self, data: tuple) -> dict:
        x, y = data
        teacher_logits = self._teacher_logits(x)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            if replicas == 1:
                loss = self.joint_loss(y, logits, teacher_logits)
            else:
                # This replica's part of the global mean: the optimizer sums the
                # replicas' gradients, which then equal one device's on the whole batch.
                ctx = tf.distribute.get_replica_context()
                n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(y)[0], tf.float32))
                per = self.example_losses(y, logits, teacher_logits)
                loss = tf.reduce_sum(per) / tf.maximum(n, 1.0)
        variables = self.nested.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        # The loss metric averages over replicas: report the global mean.
        return self._update(y, logits, loss * replicas)

    def test_step(self, data: tuple) -> dict:
        x, y = data
        logits = self(x, training=False)
        return self._update(y, logits, self.joint_loss(y, logits, self._teacher_logits(x)))


def finetune_joint(
    nested: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    param_fractions: Sequence[float],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: str,
    distill: bool,
    temperature: float,
    alpha: float,
    seed: int,
    verbose: int | str = "auto",
    augment: AugmentConfig | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    teacher: keras.Model | None = None,
    checkpoint: EpochCheckpoint | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.callbacks.History | None:
    """Jointly fine-tune all submodels of ``nested`` in place (``teacher``: a
    frozen model every submodel distills from; see the module docstring;
    ``checkpoint`` and ``strategy`` as in :func:`fit_classifier`)."""
    if epochs <= 0:
        return None
    set_seed(seed)
    steps = _steps(len(x), batch_size, epochs)
    with _scope(strategy):
        trainer = JointTrainer(
            nested,
            loss_weights(param_fractions),
            distill=distill,
            temperature=temperature,
            alpha=alpha,
            teacher=teacher,
        )
        trainer.compile(
            optimizer=make_optimizer(optimizer, learning_rate(lr, schedule, steps), weight_decay)
        )
    return _fit_epochs(
        trainer,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        verbose=verbose,
        augment=augment,
        checkpoint=checkpoint,
        variables=nested.trainable_variables,
        saved={"model": nested, "optimizer": trainer.optimizer},
        strategy=strategy,
    )
