"""Peak memory and epoch times of `reds train` on a generated VWW-sized set:
in memory against streamed from disk, one replica against two.

    python examples/scale_bench.py --out build/scale            # all variants
    python examples/scale_bench.py --out build/scale --variants stream,stream_r2

Generates ``<out>/images`` (50,000 train + 2,000 test 96x96x3 PNGs, see
make_image_folder.py) unless it is there, decodes it once into the image
cache, then runs one ``reds train`` per variant (MobileNetV1-0.25 as in
configs/vww_mobilenet.yaml; ``--epochs`` base and ``--finetune-epochs``
fine-tuning epochs) in a child process and reports its peak RSS
(``ru_maxrss``), the Keras per-epoch times and the wall time. Prints a
Markdown table; the logs go to ``<out>/<variant>.log``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
VARIANTS = {
    # name: (data.stream, train.distribute)
    "memory": (False, {"strategy": "none"}),
    "stream": (True, {"strategy": "none"}),
    "stream_r2": (True, {"strategy": "mirrored", "replicas": 2}),
    "memory_r2": (False, {"strategy": "mirrored", "replicas": 2}),
}
EPOCH = re.compile(r"^\s*(\d+)/\1 - (\d+)s ", re.M)
STAGE = re.compile(r"stage \d+/\d+ ([a-z -]+?)(?: \(.*\))?: done in ([\d.]+) s")


def config(images: Path, stream: bool, distribute: dict) -> dict:
    return {
        "name": "scale",
        "dataset": "image_folder",
        "data": {"path": str(images), "image_size": [96, 96], "stream": stream},
        "seed": 0,
        "model": {"type": "mobilenet_v1", "alpha": 0.25},
        "budgets": [0.25, 0.5, 0.75, 1.0],
        "block": 4,
        "memory_budget_bytes": 65536,
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "learning_rate": 0.001,
            "distribute": distribute,
        },
        "importance": {"batches": 50, "batch_size": 64},
        "finetune": {"epochs": 1, "batch_size": 64, "learning_rate": 0.0005},
    }


def run(variant: str, out: Path, images: Path, epochs: int, ft_epochs: int) -> dict:
    stream, distribute = VARIANTS[variant]
    cfg = out / f"{variant}.yaml"
    cfg.write_text(yaml.safe_dump(config(images, stream, distribute), sort_keys=False))
    log = out / f"{variant}.log"
    cmd = [sys.executable, "-m", "reds_tf", "train", "--config", str(cfg)]
    cmd += ["--out", str(out / "runs" / variant), "--force"]
    cmd += ["--epochs", str(epochs), "--finetune-epochs", str(ft_epochs)]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{variant} failed, see {log}:\n{text[-2000:]}")
    epochs_s = [int(m.group(2)) for m in EPOCH.finditer(text)]
    stages = {m.group(1): float(m.group(2)) for m in STAGE.finditer(text)}
    return {
        "variant": variant,
        "rss_gb": usage.ru_maxrss / 2**20,  # KiB -> GiB
        "base_epoch_s": epochs_s[:epochs],
        "finetune_epoch_s": epochs_s[epochs : epochs + ft_epochs],
        "stages": stages,
        "wall_s": wall,
        "replicas": 2 if distribute.get("replicas") == 2 else 1,
        "stream": stream,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/scale"))
    ap.add_argument("--variants", default="memory,stream,stream_r2")
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    a = ap.parse_args()
    out = a.out.resolve()
    images = out / "images"
    sys.path.insert(0, str(HERE))
    import make_image_folder

    if not (images / "test").is_dir():
        print(f"generating {images} ...", flush=True)
        make_image_folder.make(images, a.train, 2_000, 96)
    from reds_tf.data import load_dataset

    t0 = time.perf_counter()
    load_dataset("image_folder", path=str(images), image_size=[96, 96], stream=True)
    print(f"image cache ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for v in a.variants.split(","):
        r = run(v, out, images, a.epochs, a.finetune_epochs)
        print(r, flush=True)
        rows.append(r)
    print("\n| variant | inputs | replicas | peak RSS | base epoch | fine-tuning epoch | run |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        where = "streamed from disk" if r["stream"] else "in memory (float32)"
        base = ", ".join(f"{s} s" for s in r["base_epoch_s"])
        ft = ", ".join(f"{s} s" for s in r["finetune_epoch_s"])
        print(
            f"| {r['variant']} | {where} | {r['replicas']} | {r['rss_gb']:.2f} GiB | {base} | "
            f"{ft} | {r['wall_s']:.0f} s |"
        )


if __name__ == "__main__":
    main()
