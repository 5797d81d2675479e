"""Bad inputs and faults of ``reds train`` for RELIABILITY.md (collected by
tests/test_reliability.py; tests/test_train_inputs.py runs them too).

Every case fails (or is refused) before any training and before TensorFlow
loads, in well under 5 s. ``argv`` are ``reds`` arguments; ``{tmp}`` is a
fresh temp folder, ``{repo}`` the repository root; ``setup`` names a function
below that prepares files in ``{tmp}``. The slow faults (kill -9 at every
stage boundary, an interrupted re-run after a config change, a full disk
during a stage, an infeasible memory limit) are tested in
tests/test_train_faults.py, tests/test_train_records.py and
tests/test_train_inputs.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
_DEFAULT = REPO / "configs" / "fmnist_dnn.yaml"


def _write_config(tmp: Path, text: str, name: str = "c.yaml") -> None:
    (tmp / name).write_text(text, encoding="utf-8")


def _with(tmp: Path, **changes) -> None:
    data = yaml.safe_load(_DEFAULT.read_text(encoding="utf-8"))
    data.update(changes)
    (tmp / "c.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def broken_yaml(tmp: Path) -> None:
    _write_config(tmp, "name: x\ndataset: fashion_mnist\nbudgets: [0.25, 0.5\n")


def binary_config(tmp: Path) -> None:
    (tmp / "c.yaml").write_bytes(bytes(range(256)) * 4)


def empty_config(tmp: Path) -> None:
    _write_config(tmp, "# nothing here\n")


def exponent_floats(tmp: Path) -> None:
    # YAML 1.1 reads 1e-3 and 1e2 as strings; both must be numbers.
    _write_config(
        tmp,
        "name: x\ndataset: fashion_mnist\n"
        "train: {learning_rate: 1e-3, weight_decay: 1e2}\nfinetune: {learning_rate: 5e-4}\n",
    )


def exponent_floats_valid(tmp: Path) -> None:
    _write_config(
        tmp,
        "name: x\ndataset: fashion_mnist\ntrain: {learning_rate: 1e-3, weight_decay: 1e-9}\n"
        "memory_budget_bytes: 1e6\n",
    )


def huge_hidden(tmp: Path) -> None:
    _write_config(tmp, "name: x\ndataset: fashion_mnist\nmodel: {hidden: [99999999999999999999]}\n")


def huge_seed(tmp: Path) -> None:
    _write_config(tmp, "name: x\ndataset: fashion_mnist\nseed: 123456789012345678901234\n")


def thousand_digit_number(tmp: Path) -> None:
    _write_config(tmp, "name: x\ndataset: fashion_mnist\nseed: " + "9" * 5000 + "\n")


def huge_epochs(tmp: Path) -> None:
    _with(tmp, train={"epochs": 10**12})


def huge_memory_budget(tmp: Path) -> None:
    _write_config(tmp, "name: x\ndataset: fashion_mnist\nmemory_budget_bytes: 1e12\n")


def huge_kernel(tmp: Path) -> None:
    _write_config(
        tmp,
        "name: x\ndataset: fashion_mnist\nmodel: {type: cnn, hidden: [8], "
        "conv: [{filters: 4, kernel: 100000}]}\n",
    )


def huge_data_option(tmp: Path) -> None:
    _with(tmp, data={"augment": 10**30})


def unknown_key(tmp: Path) -> None:
    _with(tmp, train={"epoch": 3})


def a_file(tmp: Path) -> None:
    (tmp / "file").write_text("not a folder\n", encoding="utf-8")


def foreign_dir(tmp: Path) -> None:
    (tmp / "stuff").mkdir()
    (tmp / "stuff" / "keep.txt").write_text("mine\n", encoding="utf-8")


def _fake_run(tmp: Path) -> Path:
    """A run directory shell: config.yaml and base.keras (not a real model:
    these cases are refused before it is read)."""
    from reds_tf.config import config_to_yaml, load_config

    run = tmp / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config_to_yaml(load_config(_DEFAULT)), encoding="utf-8")
    (run / "base.keras").write_bytes(b"PK\x03\x04 a model")
    return run


def garbage_records(tmp: Path) -> None:
    (_fake_run(tmp) / "stages.json").write_bytes(b"\x00\xff garbage {")


def foreign_records(tmp: Path) -> None:
    (_fake_run(tmp) / "stages.json").write_text('{"version": 1, "stages": [1, 2]}')


def tampered_base(tmp: Path) -> None:
    """Records that match the config, but base.keras changed since."""
    from reds_tf.config import load_config
    from reds_tf.train_records import digest, stage_config

    run = _fake_run(tmp)
    conf = stage_config(load_config(_DEFAULT), "base")
    rec = {"config_hash": digest(conf), "after": None, "files": {"base.keras": "0" * 64}}
    (run / "stages.json").write_text(json.dumps({"version": 1, "stages": {"base": rec}}))


def changed_base(tmp: Path) -> None:
    from reds_tf.config import load_config
    from reds_tf.train_records import digest, file_sha256, stage_config

    run = _fake_run(tmp)
    conf = stage_config(load_config(_DEFAULT), "base")
    files = {"base.keras": file_sha256(run / "base.keras")}
    rec = {"config_hash": digest(conf), "after": None, "files": files, "config": conf}
    (run / "stages.json").write_text(json.dumps({"version": 1, "stages": {"base": rec}}))


_CFG = "{repo}/configs/fmnist_dnn.yaml"
_C = "{tmp}/c.yaml"
_OUT = "{tmp}/run"

CASES: list[dict] = [
    {
        "area": "train/config",
        "input": "malformed YAML (unclosed list)",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "broken_yaml",
        "exit": 2,
        "message": "malformed YAML (line 4, column 1)",
    },
    {
        "area": "train/config",
        "input": "config file of binary bytes",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "binary_config",
        "exit": 2,
        "message": "cannot read config",
    },
    {
        "area": "train/config",
        "input": "empty config (a comment only)",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "empty_config",
        "exit": 2,
        "message": "the config is empty",
    },
    {
        "area": "train/config",
        "input": "missing config file",
        "argv": ["train", "--config", "{tmp}/nope.yaml", "--out", _OUT],
        "exit": 2,
        "message": "config file not found",
    },
    {
        "area": "train/config",
        "input": "unknown key `train.epoch` (typo)",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "unknown_key",
        "exit": 2,
        "message": "train.epoch unknown key",
    },
    {
        "area": "train/config",
        "input": "`weight_decay: 1e2` (YAML 1.1 would read a string): read as the number 100",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "exponent_floats",
        "exit": 2,
        "message": "train.weight_decay must be a number in [0, 1], got 100.0",
    },
    {
        "area": "train/config",
        "input": "`learning_rate: 1e-3`, `weight_decay: 1e-9`, `memory_budget_bytes: 1e6` "
        "accepted (the run then stops at --threads 0, checked after the config)",
        "argv": ["train", "--config", _C, "--out", _OUT, "--threads", "0"],
        "setup": "exponent_floats_valid",
        "exit": 2,
        "message": "--threads must be an integer from 1 to 1024, got 0",
    },
    {
        "area": "train/config",
        "input": "`model.hidden: [99999999999999999999]`",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "huge_hidden",
        "exit": 2,
        "message": "model.hidden entries must be at most 65536",
    },
    {
        "area": "train/config",
        "input": "24-digit `seed`",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "huge_seed",
        "exit": 2,
        "message": "seed must be at most 4294967295, got 123456789012345678901234",
    },
    {
        "area": "train/config",
        "input": "5000-digit number",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "thousand_digit_number",
        "exit": 2,
        "message": "malformed YAML: a number with too many digits",
    },
    {
        "area": "train/config",
        "input": "`train.epochs: 10**12`",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "huge_epochs",
        "exit": 2,
        "message": "train.epochs must be at most 100000",
    },
    {
        "area": "train/config",
        "input": "`memory_budget_bytes: 1e12`",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "huge_memory_budget",
        "exit": 2,
        "message": "memory_budget_bytes must be at most 4294967295",
    },
    {
        "area": "train/config",
        "input": "conv `kernel: 100000`",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "huge_kernel",
        "exit": 2,
        "message": "model.conv[0].kernel entries must be at most 1024",
    },
    {
        "area": "train/config",
        "input": "`data: {augment: 10**30}`",
        "argv": ["train", "--config", _C, "--out", _OUT],
        "setup": "huge_data_option",
        "exit": 2,
        "message": "data.augment integers must be at most 2147483647",
    },
    {
        "area": "train/cli",
        "input": "`--epochs 0`",
        "argv": ["train", "--config", _CFG, "--out", _OUT, "--epochs", "0"],
        "exit": 2,
        "message": "train.epochs must be a positive integer, got 0",
    },
    {
        "area": "train/cli",
        "input": "`--seed` with 24 digits",
        "argv": ["train", "--config", _CFG, "--out", _OUT, "--seed", "1" * 24],
        "exit": 2,
        "message": "seed must be at most 4294967295",
    },
    {
        "area": "train/cli",
        "input": "`--threads 0`",
        "argv": ["train", "--config", _CFG, "--out", _OUT, "--threads", "0"],
        "exit": 2,
        "message": "--threads must be an integer from 1 to 1024, got 0",
    },
    {
        "area": "train/output",
        "input": "`--out` in a folder nobody may write (`/sys`)",
        "argv": ["train", "--config", _CFG, "--out", "/sys/reds_run"],
        "exit": 2,
        "message": "cannot write to /sys (Permission denied); choose another --out",
    },
    {
        "area": "train/output",
        "input": "`--out` below a regular file",
        "argv": ["train", "--config", _CFG, "--out", "{tmp}/file/run"],
        "setup": "a_file",
        "exit": 2,
        "message": "is not a directory; choose another --out",
    },
    {
        "area": "train/output",
        "input": "`--out` is a regular file",
        "argv": ["train", "--config", _CFG, "--out", "{tmp}/file"],
        "setup": "a_file",
        "exit": 2,
        "message": "exists and is not a directory",
    },
    {
        "area": "train/output",
        "input": "`--out` is a non-empty folder that is no run directory",
        "argv": ["train", "--config", _CFG, "--out", "{tmp}/stuff"],
        "setup": "foreign_dir",
        "exit": 2,
        "message": "is not a reds run directory",
    },
    {
        "area": "train/resume",
        "input": "`stages.json` of binary garbage",
        "argv": ["train", "--config", _CFG, "--out", _OUT],
        "setup": "garbage_records",
        "exit": 2,
        "message": "stages.json is unreadable",
    },
    {
        "area": "train/resume",
        "input": "`stages.json` of the wrong shape",
        "argv": ["train", "--config", _CFG, "--out", _OUT],
        "setup": "foreign_records",
        "exit": 2,
        "message": "stages.json is not a reds stage record",
    },
    {
        "area": "train/resume",
        "input": "`base.keras` changed after it was recorded",
        "argv": ["train", "--config", _CFG, "--out", _OUT],
        "setup": "tampered_base",
        "exit": 2,
        "message": "base.keras differs from its record in stages.json",
    },
    {
        "area": "train/resume",
        "input": "resume with a changed base config (`--epochs 3`)",
        "argv": ["train", "--config", _CFG, "--out", _OUT, "--epochs", "3"],
        "setup": "changed_base",
        "exit": 2,
        "message": "different base config (train.epochs was 20, now 3)",
    },
]

_REC = "tests/test_train_records.py::"
FAULTS: list[dict] = [
    {
        "area": "train/faults",
        "input": "kill -9 inside the base, rank, fine-tuning stages (temp file or temp run "
        "folder not yet renamed), after a stage's files before its record, as stage 6 "
        "begins, then the same command again",
        "outcome": "after every kill the records match their files; each re-run redoes the "
        "unrecorded stage, removes the temp files and folders; the finished run's "
        "submodels.json accuracies equal model.keras re-evaluated",
        "test": "tests/test_train_faults.py::test_sigkill_then_rerun_keeps_the_run_consistent",
    },
    {
        "area": "train/faults",
        "input": "stopped at every point of every stage (begin, temp written, files written, "
        "record written), in-process",
        "outcome": "a stage is recorded exactly when it got past its record; the re-run "
        "completes a consistent run",
        "test": _REC + "test_killed_at_every_point_then_resumed",
    },
    {
        "area": "train/faults",
        "input": "run with --finetune-epochs 1, re-run with 2 interrupted (stale records "
        "dropped / stage 6 begun / report written), the first command again",
        "outcome": "fine-tuning and the later stages are redone (base .. knapsack kept); "
        "model.keras matches submodels.json and the records (was: every stage 'already "
        "done' over the 2-epoch weights)",
        "test": _REC + "test_interrupted_rerun_with_changed_config_is_redone",
    },
    {
        "area": "train/faults",
        "input": "model.keras replaced after training (a file differs from its record)",
        "outcome": "redone from fine-tuning on: 'model.keras differs from its record'",
        "test": _REC + "test_a_changed_file_is_redone_with_everything_after",
    },
    {
        "area": "train/faults",
        "input": "disk full while a stage writes (OSError ENOSPC)",
        "outcome": "exit 2, one line: '<path>: No space left on device (while training "
        "into <run>)'; the records before that stage stay valid",
        "test": _REC + "test_write_errors_are_one_line_naming_the_path",
    },
    {
        "area": "train/config",
        "input": "memory_budget_bytes below the smallest or the full model's need",
        "outcome": "exit 2 before any training, no run directory; on a resume, nothing deleted",
        "test": _REC + "test_memory_budget_checked_before_training",
    },
    {
        "area": "train/resume",
        "input": "run directory from before stage records (no stages.json)",
        "outcome": "base.keras kept (its config.yaml keys match), every later stage redone",
        "test": _REC + "test_run_dir_without_records_keeps_only_its_base",
    },
    {
        "area": "train/output",
        "input": "TensorFlow's log lines (oneDNN, cuInit, NodeDef, retracing)",
        "outcome": "hidden; shown with --verbose",
        "test": "tests/test_train_inputs.py::test_tensorflow_noise_hidden_unless_verbose",
    },
]
