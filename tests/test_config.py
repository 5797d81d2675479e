from __future__ import annotations

from pathlib import Path

import pytest

from reds_tf.config import (
    config_to_dict,
    config_to_yaml,
    load_config,
    parse_config,
    with_overrides,
)
from reds_tf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BASE = {"name": "t", "dataset": "fashion_mnist"}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_default_config_loads():
    cfg = load_config(REPO / "configs" / "fmnist_dnn.yaml")
    assert cfg.name == "fmnist_dnn"
    assert cfg.dataset == "fashion_mnist"
    assert cfg.model.type == "dnn" and cfg.model.hidden == (256, 256)
    assert cfg.budgets == (0.25, 0.5, 0.75, 1.0)
    assert cfg.block == 4
    assert cfg.train.epochs == 20 and cfg.finetune.epochs == 10


def test_minimal_config_gets_defaults_and_full_budget():
    cfg = parse_config({**BASE, "budgets": [0.3, 0.6]})
    assert cfg.budgets == (0.3, 0.6, 1.0)  # the full model is always the last submodel
    assert cfg.train.batch_size == 128 and cfg.finetune.distill is True


def test_round_trip_through_yaml():
    import yaml

    cfg = load_config(REPO / "configs" / "fmnist_dnn.yaml")
    again = parse_config(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "data, needle",
    [
        (
            {**BASE, "train": {"epochs": "abc"}},
            "train.epochs must be a positive integer, got 'abc'",
        ),
        ({**BASE, "train": {"epochs": 0}}, "train.epochs must be a positive integer"),
        ({**BASE, "train": {"epoch": 3}}, "train.epoch unknown key"),
        ({**BASE, "modle": {}}, "modle unknown key"),
        ({**BASE, "model": {"type": "resnet50"}}, "model.type must be one of"),
        ({**BASE, "model": {"type": "resnet"}}, "model.first is required for model.type resnet"),
        ({**BASE, "model": {"hidden": []}}, "model.hidden must be a non-empty list"),
        ({**BASE, "model": {"hidden": [64, -1]}}, "model.hidden must be a non-empty list"),
        ({**BASE, "budgets": [0.5, 0.25]}, "budgets must be strictly increasing"),
        ({**BASE, "budgets": [0, 0.5]}, "budgets entries must be MAC fractions in (0, 1]"),
        ({**BASE, "budgets": [0.5, 1.5]}, "budgets entries must be MAC fractions"),
        ({**BASE, "budgets": "0.5"}, "budgets must be a non-empty list"),
        ({**BASE, "block": 0}, "block must be a positive integer"),
        ({**BASE, "finetune": {"distill": "yes"}}, "finetune.distill must be true or false"),
        ({**BASE, "finetune": {"alpha": 2}}, "finetune.alpha must be a number in [0, 1]"),
        ({**BASE, "train": {"learning_rate": 0}}, "train.learning_rate must be a number in (0, 1]"),
        ({**BASE, "train": {"schedule": "step"}}, "train.schedule must be one of cosine, constant"),
        ({**BASE, "train": [1, 2]}, "train must be a mapping"),
        ({**BASE, "knapsack": {"method": "dp"}}, "knapsack.method must be one of auto, milp"),
        ({**BASE, "knapsack": {"cost": "energy"}}, "knapsack.cost must be one of macs, latency"),
        ({**BASE, "name": "a b/c"}, "name must use only letters"),
        ({"dataset": "fashion_mnist"}, "name is required"),
        ({"name": "x"}, "dataset is required"),
        ([1, 2], "the top level must be a mapping"),
    ],
)
def test_invalid_values_name_the_key(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(data, "configs/x.yaml")
    assert str(e.value).startswith("configs/x.yaml: ")
    assert needle in str(e.value)


def test_malformed_yaml_is_config_error(tmp_path):
    p = write(tmp_path, "name: x\nmodel: {type: dnn, hidden: [256\n")
    with pytest.raises(ConfigError, match=r"malformed YAML \(line \d+, column \d+\)"):
        load_config(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="the config is empty"):
        load_config(write(tmp_path, "# nothing\n"))


def test_overrides_apply_and_validate():
    cfg = parse_config(BASE, "c.yaml")
    new = with_overrides(cfg, epochs=3, finetune_epochs=0, limit=500, seed=7, baseline="scratch")
    assert (new.train.epochs, new.finetune.epochs, new.train.limit) == (3, 0, 500)
    assert (new.seed, new.baseline) == (7, "scratch")
    assert with_overrides(cfg, epochs=None) == cfg
    with pytest.raises(ConfigError, match="train.limit must be a positive integer"):
        with_overrides(cfg, limit=-5)


@pytest.mark.parametrize(
    "name",
    ["kws_cnn_s", "kws_cnn_l", "kws_dscnn_s", "kws_dscnn_l", "cifar10_dscnn", "fmnist_dscnn",
     "vww_mobilenet"],
)  # fmt: skip
def test_conv_configs_round_trip(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    again = parse_config(config_to_dict(cfg), cfg.source)
    assert again == cfg


def test_conv_model_keys():
    cfg = parse_config(
        {
            **BASE,
            "model": {
                "type": "dscnn",
                "first": {"filters": 8, "kernel": 3, "strides": [2, 1]},
                "blocks": [{"filters": 8, "strides": 2}, {"filters": 4}],
            },
            "train": {"augment": {"flip": True, "shift": 4}},
            "finetune": {"bn_stats": "per_submodel"},
            "memory_budget_bytes": 65536,
        }
    )
    m = cfg.model
    assert m.first.kernel == (3, 3) and m.first.strides == (2, 1)
    assert [b.filters for b in m.blocks] == [8, 4] and m.blocks[0].strides == (2, 2)
    assert cfg.train.augment.flip and cfg.train.augment.shift == 4
    assert cfg.finetune.bn_stats == "per_submodel" and cfg.memory_budget_bytes == 65536
    n = parse_config({**BASE, "model": {"type": "dscnn", "first": {"filters": 8}, "blocks": 3}})
    assert [b.filters for b in n.model.blocks] == [8, 8, 8]
    # Keys that do not apply to a dense config stay out of the resolved config.
    d = config_to_dict(parse_config(BASE))
    assert set(d["model"]) == {"type", "hidden", "dropout"} and "augment" not in d["train"]


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"type": "dscnn", "blocks": 2}, r"model\.first is required"),
        ({"type": "dscnn", "first": {"filters": 8}, "blocks": 0}, r"model\.blocks must be"),
        ({"type": "dscnn", "first": {"filters": 8, "kernal": 3}, "blocks": 1}, r"first\.kernal"),
        ({"type": "cnn", "hidden": [8]}, r"model\.conv is required"),
        ({"type": "cnn", "conv": [{"filters": 4, "strides": [1, 0]}]}, r"conv\[0\]\.strides"),
        ({"type": "dnn", "first": {"filters": 8}}, r"model\.first is only used by"),
        ({"type": "mobilenet_v1", "alpha": 0}, r"model\.alpha"),
    ],
)  # fmt: skip
def test_conv_model_errors_name_the_key(model, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({**BASE, "model": model})


def test_augment_and_bn_stats_errors():
    with pytest.raises(ConfigError, match=r"train\.augment\.shift"):
        parse_config({**BASE, "train": {"augment": {"shift": -1}}})
    with pytest.raises(ConfigError, match=r"train\.augment\.rotate"):
        parse_config({**BASE, "train": {"augment": {"rotate": 5}}})
    with pytest.raises(ConfigError, match=r"finetune\.bn_stats must be one of"):
        parse_config({**BASE, "finetune": {"bn_stats": "switchable"}})
    with pytest.raises(ConfigError, match=r"memory_budget_bytes"):
        parse_config({**BASE, "memory_budget_bytes": 0})


def test_optimizer_keys_round_trip_and_default_recipe_stays_implicit():
    cfg = parse_config(
        {**BASE, "train": {"optimizer": "sgd", "weight_decay": 5e-4}, "finetune": {}}
    )
    assert (cfg.train.optimizer, cfg.train.weight_decay) == ("sgd", 5e-4)
    assert cfg.finetune.optimizer == "adam" and cfg.finetune.weight_decay == 0.0
    d = config_to_dict(cfg)
    assert d["train"]["optimizer"] == "sgd"
    # Adam without decay is left out so run dirs written before these keys resume.
    assert "optimizer" not in d["finetune"] and "weight_decay" not in d["finetune"]
    assert parse_config(d) == cfg
    with pytest.raises(ConfigError, match=r"train\.optimizer must be one of adam, sgd"):
        parse_config({**BASE, "train": {"optimizer": "rmsprop"}})
    with pytest.raises(ConfigError, match=r"finetune\.weight_decay must be a number in \[0, 1\]"):
        parse_config({**BASE, "finetune": {"weight_decay": -1}})


def test_private_bn_affine_needs_per_submodel_statistics():
    ok = parse_config(
        {**BASE, "finetune": {"bn_stats": "per_submodel", "bn_affine": "per_submodel"}}
    )
    assert config_to_dict(ok)["finetune"]["bn_affine"] == "per_submodel"
    assert "bn_affine" not in config_to_dict(parse_config(BASE))["finetune"]
    with pytest.raises(ConfigError, match=r"finetune\.bn_affine per_submodel needs bn_stats"):
        parse_config({**BASE, "finetune": {"bn_affine": "per_submodel"}})


def test_base_teacher_needs_distillation():
    ok = parse_config({**BASE, "finetune": {"teacher": "base"}})
    assert ok.finetune.teacher == "base"
    assert config_to_dict(ok)["finetune"]["teacher"] == "base"
    assert "teacher" not in config_to_dict(parse_config(BASE))["finetune"]  # old runs resume
    with pytest.raises(ConfigError, match=r"finetune\.teacher base needs distill: true"):
        parse_config({**BASE, "finetune": {"teacher": "base", "distill": False}})
    with pytest.raises(ConfigError, match=r"finetune\.teacher"):
        parse_config({**BASE, "finetune": {"teacher": "self"}})


def test_exponent_floats_are_numbers(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; the config loader reads it as a number."""
    p = write(
        tmp_path,
        "name: t\ndataset: fashion_mnist\n"
        "train: {learning_rate: 1e-3, weight_decay: 1E-9, epochs: 1e1}\n"
        "finetune: {learning_rate: +5e-4}\nknapsack: {time_limit: 6e1}\n"
        "memory_budget_bytes: 1e6\n",
    )
    cfg = load_config(p)
    assert (cfg.train.learning_rate, cfg.train.weight_decay) == (1e-3, 1e-9)
    assert cfg.train.epochs == 10 and isinstance(cfg.train.epochs, int)
    assert cfg.finetune.learning_rate == 5e-4 and cfg.knapsack.time_limit == 60.0
    assert cfg.memory_budget_bytes == 1_000_000
    with pytest.raises(
        ConfigError, match=r"train\.weight_decay must be a number in \[0, 1\], got 100\.0"
    ):
        load_config(
            write(tmp_path, "name: t\ndataset: fashion_mnist\ntrain: {weight_decay: 1e2}\n")
        )
    with pytest.raises(ConfigError, match=r"train\.epochs must be a positive integer, got 2\.5"):
        parse_config({**BASE, "train": {"epochs": 2.5}})
    # Strings stay strings where a string is expected.
    assert load_config(write(tmp_path, "name: 1e3x\ndataset: fashion_mnist\n")).name == "1e3x"


_CNN = {"type": "cnn", "hidden": [8]}


@pytest.mark.parametrize(
    "data, needle",
    [
        ({**BASE, "seed": 10**23}, "seed must be at most 4294967295, got 100000000000000000000000"),
        ({**BASE, "model": {"hidden": [10**20]}}, "model.hidden entries must be at most 65536"),
        ({**BASE, "train": {"epochs": 10**12}}, "train.epochs must be at most 100000"),
        ({**BASE, "train": {"batch_size": 10**9}}, "train.batch_size must be at most 1000000"),
        ({**BASE, "train": {"limit": 10**10}}, "train.limit must be at most 2147483647"),
        ({**BASE, "train": {"augment": {"shift": 10**5}}}, "train.augment.shift must be at most"),
        ({**BASE, "finetune": {"epochs": 10**6}}, "finetune.epochs must be at most 100000"),
        ({**BASE, "finetune": {"batch_size": 10**7}}, "finetune.batch_size must be at most"),
        ({**BASE, "importance": {"batches": 10**8}}, "importance.batches must be at most"),
        ({**BASE, "importance": {"batch_size": 10**8}}, "importance.batch_size must be at most"),
        ({**BASE, "block": 10**6}, "block must be at most 65536"),
        ({**BASE, "memory_budget_bytes": 1e12}, "memory_budget_bytes must be at most 4294967295"),
        ({**BASE, "data": {"augment": 10**30}}, "data.augment integers must be at most"),
        (
            {**BASE, "model": {**_CNN, "conv": [{"filters": 10**6}]}},
            "model.conv[0].filters must be at most 65536",
        ),
        (
            {**BASE, "model": {**_CNN, "conv": [{"filters": 4, "kernel": 10**5}]}},
            "model.conv[0].kernel entries must be at most 1024",
        ),
        (
            {**BASE, "model": {**_CNN, "conv": [{"filters": 4, "strides": [1, 10**9]}]}},
            "model.conv[0].strides entries must be at most 1024",
        ),
        (
            {**BASE, "model": {"type": "dscnn", "first": {"filters": 8}, "blocks": 10**6}},
            "model.blocks must be at most 1024",
        ),
        ({**BASE, "seed": 10**5000}, "seed must be at most 4294967295, got a number too large"),
    ],
)  # fmt: skip
def test_every_integer_is_bounded(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(data, "configs/x.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 200


def test_overrides_are_bounded():
    cfg = parse_config(BASE, "c.yaml")
    with pytest.raises(ConfigError, match=r"seed must be at most 4294967295"):
        with_overrides(cfg, seed=10**24)
    with pytest.raises(ConfigError, match=r"train\.epochs must be at most"):
        with_overrides(cfg, epochs=10**20)


def test_thousands_of_digits_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"malformed YAML: a number with too many digits"):
        load_config(write(tmp_path, "name: t\ndataset: fashion_mnist\nseed: " + "9" * 5000))


def test_model_type_names_match_the_builders():
    from reds_tf.config import MODEL_TYPE_NAMES
    from reds_tf.models import MODEL_TYPES

    assert set(MODEL_TYPE_NAMES) == set(MODEL_TYPES)


def test_config_validation_does_not_import_tensorflow():
    """Config errors come before TensorFlow loads (6-60 s otherwise)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from reds_tf.config import load_config, parse_config\n"
        f"for n in {sorted(p.name for p in (REPO / 'configs').glob('*.yaml'))!r}:\n"
        f"    load_config({str(REPO / 'configs')!r} + '/' + n)\n"
        "try:\n"
        "    parse_config({'name': 'x', 'dataset': 'd', 'model': {'type': 'resnet50'}})\n"
        "except Exception as e:\n"
        "    print(e)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2].endswith(
        "model.type must be one of cnn, dnn, dscnn, mobilenet_v1, resnet, got 'resnet50'"
    )
    assert r.stdout.splitlines()[-1] == "False"
