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
        ({**BASE, "model": {"type": "resnet"}}, "model.type must be one of"),
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
