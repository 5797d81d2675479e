"""``reds`` command line: argument parsing only; every subcommand calls one library function.

Stage modules are imported lazily so that ``reds --help`` is instant and does not
load TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from reds_tf import __version__
from reds_tf.errors import RedsError


def _cmd_train(args: argparse.Namespace) -> int:
    # Bad input is reported before TensorFlow loads (reds_tf.pipeline imports it).
    from reds_tf.train_records import check_training_inputs

    checked = check_training_inputs(
        args.config,
        out_dir=args.out,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        limit=args.limit,
        seed=args.seed,
        base_model=args.base,
        baseline=args.baseline,
        force=args.force,
        threads=args.threads,
    )
    from reds_tf.pipeline import train_checked

    train_checked(checked)
    return 0


def _arena_mode(text: str) -> str | int:
    if text in ("balanced", "smallest", "fastest"):
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither 'balanced', 'smallest', 'fastest' nor a positive number of bytes"
        )
    return n


def _cmd_export(args: argparse.Namespace) -> int:
    # Bad input is reported before TensorFlow loads (reds_tf.export imports it).
    from reds_tf.rundir import check_export_inputs

    check_export_inputs(args.run_dir, qat=args.qat, qat_epochs=args.qat_epochs, limit=args.limit)
    from reds_tf.export import run_export

    run_export(
        args.run_dir,
        qat=args.qat,
        qat_epochs=args.qat_epochs,
        limit=args.limit,
        bn_stats=args.bn_stats,
        arena=args.arena,
    )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from reds_tf.sim import run_simulate

    run_simulate(
        args.run_dir,
        submodel=args.submodel,
        inputs=args.inputs,
        output=args.output,
        limit=args.limit,
        trust=args.trust,
    )
    return 0


def _cmd_firmware(args: argparse.Namespace) -> int:
    from reds_tf.firmware import run_firmware

    return run_firmware(
        args.run_dir, board=args.board, serve=args.serve, upload=args.upload, trust=args.trust
    )


def _cmd_monitor(args: argparse.Namespace) -> int:
    from reds_tf.monitor import run_monitor

    return run_monitor(
        port=args.port, baud=args.baud, demo=args.demo, samples=args.samples, timeout=args.timeout
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.host:
        from reds_tf.bench_host import run_host_bench

        if args.out is not None:
            raise SystemExit("reds bench: --out is for the Cortex-M4 benchmark, not --host")
        run_host_bench(
            args.run_dir,
            markdown=args.markdown,
            samples=args.samples,
            repeats=args.repeats,
            rounds=args.rounds,
            trust=args.trust,
        )
        return 0
    from reds_tf.bench import run_bench

    run_bench(args.run_dir, out=args.out, markdown=args.markdown, trust=args.trust)
    return 0


def _cmd_arduino(args: argparse.Namespace) -> int:
    from reds_tf.arduino import run_arduino

    return run_arduino(args.run_dir, out=args.output, trust=args.trust)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reds",
        description=(
            "REDS: train one set of weights holding nested submodels, pick them with a "
            "knapsack, export an int8 C++ runtime that switches between them at run time."
        ),
    )
    verbose_help = "show TensorFlow's log lines and warnings (hidden by default)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.add_argument("--version", action="version", version=f"reds_tf {__version__}")
    # Also accepted after the command; SUPPRESS keeps a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    p = add("train", help="train, rank, permute, pick submodels, fine-tune jointly")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--finetune-epochs", type=int, help="override finetune.epochs")
    p.add_argument("--limit", type=int, help="use at most N training samples (quick runs)")
    p.add_argument("--seed", type=int, help="random seed (default: config seed, else 0)")
    p.add_argument("--base", help="start from this pretrained .keras model instead of training")
    p.add_argument(
        "--baseline",
        choices=["none", "scratch"],
        default=None,
        help="also train every chosen submodel architecture alone for comparison",
    )
    p.add_argument("--force", action="store_true", help="start over instead of resuming")
    p.add_argument(
        "--threads", type=int, help="CPU threads TensorFlow may use (default: all cores)"
    )
    p.set_defaults(func=_cmd_train)

    p = add("export", help="int8 .tflite per submodel and the generated C++ runtime")
    p.add_argument("run_dir", help="a run directory written by 'reds train'")
    p.add_argument("--qat", action="store_true", help="quantisation-aware fine-tuning first")
    p.add_argument("--qat-epochs", type=int, default=2, help="epochs of QAT (default 2)")
    p.add_argument("--limit", type=int, help="evaluate int8 accuracy on at most N test samples")
    p.add_argument(
        "--bn-stats",
        choices=["shared", "per_submodel"],
        help="BatchNorm statistics to fold (default: the run's submodels.json 'bn_stats')",
    )
    p.add_argument(
        "--arena",
        type=_arena_mode,
        default="balanced",
        metavar="balanced|smallest|fastest|BYTES",
        help="activation memory of the runtime: 'balanced' (default: the least RAM in which "
        "layers that run in place row by row compute at least 2 rows per kernel call), "
        "'smallest' (the least RAM: 1 row per call where needed, and runs of layers "
        "streamed row by row so that no map between them exists whole; slower), 'fastest' "
        "(no in-place rows, more RAM), or a number of bytes every submodel may use (faster "
        "with more room; at least the full model's smallest arena without streams)",
    )
    p.set_defaults(func=_cmd_export)

    p = add("simulate", help="run the generated C++ on the host (bit-exact with TFLM)")
    p.add_argument("run_dir")
    p.add_argument("--submodel", type=int, required=True, help="submodel index (0 = smallest)")
    p.add_argument("--inputs", help=".npy of int8 inputs, batch first")
    p.add_argument("--output", help=".npy file for the int8 outputs (with --inputs)")
    p.add_argument("--limit", type=int, help="test samples for the accuracy run")
    p.add_argument(
        "--trust",
        action="store_true",
        help="compile export/src even if it differs from what `reds export` generated "
        "(its sha256 in manifest.json): only for code you trust",
    )
    p.set_defaults(func=_cmd_simulate)

    p = add("firmware", help="build (and serve or upload) the firmware for a board")
    p.add_argument("run_dir")
    p.add_argument("--board", required=True, choices=["nano33ble", "qemu", "native"])
    p.add_argument("--serve", action="store_true", help="qemu/native: run on a new pty")
    p.add_argument("--upload", action="store_true", help="nano33ble: upload after building")
    p.add_argument(
        "--trust",
        action="store_true",
        help="compile export/src even if it differs from what `reds export` generated "
        "(its sha256 in manifest.json): only for code you trust",
    )
    p.set_defaults(func=_cmd_firmware)

    p = add("monitor", help="serial monitor: switch submodels, infer, benchmark")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0 or /dev/pts/3")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--demo", metavar="RUN_DIR", help="run test samples through every submodel")
    p.add_argument("--samples", type=int, default=100, help="test samples per submodel (--demo)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    p.set_defaults(func=_cmd_monitor)

    p = add(
        "bench",
        help="instruction counts, flash and RAM under QEMU (--host: against TFLite Micro "
        "on this machine)",
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--host",
        action="store_true",
        help="benchmark on this machine instead: accuracy, time per inference and weight "
        "bytes of the generated runtime against the TFLite Micro interpreter",
    )
    p.add_argument("--samples", type=int, default=200, help="--host: test images timed")
    p.add_argument("--repeats", type=int, default=5, help="--host: passes per round")
    p.add_argument("--rounds", type=int, default=3, help="--host: alternating rounds")
    p.add_argument("--out", help="bench.json path (default RUN_DIR/bench.json)")
    p.add_argument(
        "--markdown",
        help="also write the results table into this Markdown file (its section for "
        "the run's name; `make bench` passes BENCHMARKS.md)",
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="compile export/src even if it differs from what `reds export` generated "
        "(its sha256 in manifest.json): only for code you trust",
    )
    p.set_defaults(func=_cmd_bench)

    p = add("arduino", help="Arduino library (.zip) with the runtime and a sketch")
    p.add_argument("run_dir", help="a run directory after 'reds export'")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.zip",
        help="zip to write, or a folder for <LibName>.zip (default RUN_DIR/arduino/)",
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="package export/src even if it differs from what `reds export` generated "
        "(its sha256 in manifest.json): only for code you trust",
    )
    p.set_defaults(func=_cmd_arduino)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from reds_tf.tflog import configure

    configure(verbose=args.verbose)  # before anything loads TensorFlow
    try:
        return int(args.func(args) or 0)
    except RedsError as e:
        print(f"reds {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reds {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`reds ... | head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
