"""REDS from a notebook: NumPy arrays and a tf_keras model in, switchable int8
submodels out, without a YAML file.

The data are 12x12 grayscale images of four stroke patterns (horizontal,
vertical, diagonal, ring) with noise, made here so the example needs no
download. The steps are the ones a user takes with their own arrays:

1. train an ordinary tf_keras model on them (any compiled classifier that
   outputs logits works the same way);
2. ``reds_tf.train``: rank its units, choose nested widths for each MAC
   budget, fine-tune all submodels jointly;
3. look at the submodels, take one out as a plain Keras model;
4. ``run.export()``: int8 .tflite files and the C++ runtime, checked bit for
   bit against TensorFlow Lite Micro;
5. ``run.runtime()``: that C++ runtime, loaded into Python, switching
   submodels per call.

Run: ``python examples/train_from_arrays.py --out runs/patterns``; afterwards
the command line reads the same run, e.g. ``reds simulate runs/patterns
--submodel 0`` (in a new process: the run keeps its own test sample).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

SIZE = 12
CLASSES = ("horizontal", "vertical", "diagonal", "ring")


def make_patterns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy images (n, 12, 12, 1) uint8 and their labels (n,) int64."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    y = rng.integers(0, len(CLASSES), n)
    x = np.zeros((n, SIZE, SIZE), np.float32)
    for i, label in enumerate(y):
        a, b = rng.integers(2, SIZE - 2, 2)
        if label == 0:
            img = np.abs(yy - a) <= 1
        elif label == 1:
            img = np.abs(xx - b) <= 1
        elif label == 2:
            img = np.abs((xx - yy) - (b - a) // 2) <= 1
        else:
            r = np.hypot(yy - a, xx - b)
            img = np.abs(r - 2.5) <= 0.8
        x[i] = img * rng.uniform(0.6, 1.0) + rng.normal(0, 0.15, (SIZE, SIZE))
    x = np.clip(x, 0, 1)
    return np.round(x * 255).astype(np.uint8)[..., None], y.astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/patterns", help="run directory to write")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the plain Keras training")
    ap.add_argument("--samples", type=int, default=3000, help="training images to make")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tf_keras as keras

    import reds_tf

    x_train, y_train = make_patterns(args.samples, seed=1)
    x_test, y_test = make_patterns(600, seed=2)

    # 1. An ordinary Keras model, trained the ordinary way (on inputs in [0, 1]).
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(len(CLASSES)),
        ]
    )
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    )
    model.fit(x_train / 255.0, y_train, epochs=args.epochs, batch_size=64, verbose=0)

    # 2. REDS: three nested submodels at 25 %, 50 % and 100 % of the MACs.
    run = reds_tf.train(
        config={"name": "patterns", "budgets": [0.25, 0.5, 1.0], "finetune": {"epochs": 3}},
        model=model,
        data=(x_train, y_train, x_test, y_test),  # uint8: scaled by 1/255 like above
        out=args.out,
        force=True,
        verbose=0,
    )

    # 3. The submodels, and the smallest one as a plain Keras model.
    for s in run.submodels:
        print(
            f"submodel {s['index']}: {s['macs']:,} MACs ({s['macs_fraction']:.2f}), "
            f"float accuracy {s['accuracy']:.3f}, widths {s['widths']}"
        )
    small = run.submodel(0)
    print(f"submodel 0 as a Keras model: {small.count_params():,} parameters")

    # 4. int8 export, checked against TensorFlow Lite Micro.
    run.export(log=None)

    # 5. The C++ runtime in this process: quantise once, switch per call.
    rt = run.runtime()
    xq = rt.quantize(x_test.astype(np.float32) / 255.0)
    for k in range(rt.num_submodels):
        acc = float(np.mean(np.argmax(rt.predict(xq, k), axis=1) == y_test))
        print(f"C++ runtime, submodel {k}: int8 accuracy {acc:.3f} ({rt.macs(k):,} MACs)")
    print(f"run directory: {run.path} (reds_tf {reds_tf.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
