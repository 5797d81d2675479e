"""Keyword spotting end to end: the config's ``data:`` options, and a DS-CNN-S
REDS run on a tiny ``synthetic_keywords`` set (generated here into a temporary
cache) that trains, exports and is bit-exact with TFLite Micro on every submodel.

The set is tiny (a handful of espeak-ng speakers) and training is one epoch on
it, so accuracies are not checked: what must hold is the data flow (the same
options reach training, export, simulate and the monitor demo) and the int8
runtime matching TFLM exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from reds_tf.config import check_data_options, config_to_dict, parse_config
from reds_tf.errors import ConfigError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASE = {"name": "t", "dataset": "synthetic_keywords"}


# ------------------------------------------------------------ config `data:`


def test_data_options_parse_and_round_trip() -> None:
    cfg = parse_config({**BASE, "data": {"augment": 2, "variants_per_voice": 3}}, "c.yaml")
    assert cfg.data == {"augment": 2, "variants_per_voice": 3}
    out = config_to_dict(cfg)
    assert out["data"] == {"augment": 2, "variants_per_voice": 3}
    assert parse_config(out, "resolved") == cfg
    # No options: the resolved config has no `data` key (older run dirs resume).
    assert "data" not in config_to_dict(parse_config(dict(BASE), "c.yaml"))
    assert parse_config({**BASE, "data": None}, "c.yaml").data == {}


@pytest.mark.parametrize(
    "data, needle",
    [
        ([1, 2], "c.yaml: data must be a mapping"),
        ({"augment": {"x": 1}}, "c.yaml: data.augment must be a number"),
        ({"speakers": [["en", {"m": 1}]]}, "data.speakers must be"),
        ({"not a name": 1}, "data keys must be option names"),
    ],
)
def test_invalid_data_options_name_the_key(data, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_config({**BASE, "data": data}, "c.yaml")


def test_options_the_loader_rejects_name_the_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REDS_CACHE_DIR", str(tmp_path))
    from reds_tf.data import load_dataset

    # The synthetic loader rejects unknown generation options before generating.
    cfg = parse_config({**BASE, "data": {"augment": 1, "voices": 3}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.voices: .*no option\(s\) voices"):
        check_data_options(cfg, load_dataset)
    # Bad values are caught before generation too, naming the option.
    for data, key in [
        ({"variants_per_voice": 0}, "variants_per_voice"),
        ({"repeats": "2"}, "repeats"),
    ]:
        cfg = parse_config({**BASE, "data": data}, "c.yaml")
        with pytest.raises(ConfigError, match=rf"c\.yaml: data\.{key}: .*{key} must be an integer"):
            check_data_options(cfg, load_dataset)
    cfg = parse_config({**BASE, "data": {"speakers": [["en", 3]]}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"data\.speakers: .*\[voice, variant\]"):
        check_data_options(cfg, load_dataset)
    # A loader without keywords: the registry rejects the option before loading.
    cfg = parse_config({**BASE, "dataset": "fashion_mnist", "data": {"augment": 2}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"data\.augment: dataset 'fashion_mnist' has no"):
        check_data_options(cfg, load_dataset)


# ------------------------------------------------------------ end to end


def _speakers() -> list[list[str]]:
    """4 training and 2 testing voice+variant speakers (by the hash split rule)."""
    from reds_tf.data import speech_commands as sc
    from reds_tf.data import synthetic_keywords as sk

    want = {"training": 4, "testing": 2, "validation": 0}
    out = []
    for voice in sk.english_voices():
        for variant in ("m1", "f2", "m3", "f4", "klatt"):
            s = sc.which_set(f"{sk.speaker_id(voice, variant)}_nohash_0.wav")
            if want[s] > 0:
                want[s] -= 1
                out.append([voice, variant])
    assert not any(want.values()), "not enough espeak-ng voices for the split"
    return out


@pytest.fixture(scope="module")
def kws_run(tmp_path_factory: pytest.TempPathFactory):
    """A trained and exported DS-CNN-S REDS run on a tiny synthetic set."""
    from reds_tf.data import synthetic_keywords as sk
    from reds_tf.errors import DataError

    try:
        sk.check_tools()
    except DataError as e:
        pytest.skip(str(e))
    from reds_tf.export import run_export
    from reds_tf.pipeline import run_training

    tmp = tmp_path_factory.mktemp("kws_e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("REDS_CACHE_DIR", str(tmp / "cache"))
    data = {
        "speakers": _speakers(),
        "repeats": 2,
        "unknown_per_speaker": 4,
        "noise_seconds": 5,
        "augment": 2,
    }
    # DS-CNN-S exactly as configs/kws_synth_dscnn_s.yaml, trained briefly; small
    # batches give enough steps for BatchNorm's moving statistics to leave their
    # initial values (else the int8 model can be constant and the check vacuous).
    cfg = yaml.safe_load(Path("configs/kws_synth_dscnn_s.yaml").read_text())
    cfg.update(
        name="kws_e2e",
        data=data,
        train={"epochs": 6, "batch_size": 8},
        importance={"batches": 4, "batch_size": 16},
        finetune={"epochs": 1, "batch_size": 8},
    )
    path = tmp / "kws_e2e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_training(path, out_dir=tmp / "run", log=lambda _m: None, verbose=0)
    export = run_export(run, log=lambda _m: None)
    yield run, export, data
    mp.undo()


def test_kws_run_records_and_reuses_the_data_options(kws_run) -> None:
    from reds_tf.export import load_run_data, load_submodels
    from reds_tf.monitor import demo_inputs

    run, export, data = kws_run
    sub = load_submodels(run)
    assert sub["dataset"] == "synthetic_keywords" and sub["data_options"] == data
    assert sub["input_shape"] == [49, 10, 1] and sub["num_classes"] == 12
    assert [ly["name"] for ly in sub["layers"]] == [
        "conv1", "dw1", "pw1", "dw2", "pw2", "dw3", "pw3", "dw4", "pw4", "logits",
    ]  # fmt: skip
    # Export, simulate and the monitor demo read the tiny set, not the default one.
    ds = load_run_data(run, sub).dataset
    assert "6 voice+variant speakers" in ds.source
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["eval_samples"] == len(ds.x_test)
    x, y, _ = demo_inputs(run, 10_000)
    assert len(x) == len(ds.x_test) and np.array_equal(y, ds.y_test)
    # The resolved config keeps the options, so a resume sees no change.
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == data


def test_kws_export_is_bit_exact_with_tflm_on_every_submodel(kws_run) -> None:
    from reds_tf.export import load_run_data
    from reds_tf.quant import numerics
    from reds_tf.quant.tflm import run_tflm
    from reds_tf.sim import load_runtime, run_simulate

    run, export, _ = kws_run
    manifest = json.loads((export / "manifest.json").read_text())
    n_eval = manifest["eval_samples"]
    assert manifest["runtime_check"] == (
        f"bit-exact with TFLite Micro on {n_eval} test inputs per submodel"
    )
    assert manifest["num_submodels"] == 4
    macs = [e["macs"] for e in manifest["submodels"]]
    assert macs == sorted(macs) and len(set(macs)) == 4
    # Our own comparison on a few hundred real MFCC inputs (test + augmented
    # training clips), straight against the TFLM subprocess.
    ds = load_run_data(run).dataset
    x = np.concatenate([ds.x_test, ds.x_train])[:300]
    assert len(x) >= 200
    xq = numerics.quantize(x, manifest["input_scale"], manifest["input_zero_point"])
    rt = load_runtime(run)
    for e in manifest["submodels"]:
        ours = rt.predict(xq, e["index"])
        ref = run_tflm(export / e["tflite"], xq).outputs.reshape(ours.shape)
        assert np.array_equal(ours, ref), f"submodel {e['index']} differs from TFLM"
        # Not a constant output: the check would be vacuous otherwise.
        assert len({row.tobytes() for row in ours}) > 10
    # `reds simulate` reports the manifest's int8 accuracy on the same test set.
    acc = run_simulate(run, submodel=3)
    assert acc == pytest.approx(manifest["submodels"][3]["int8_accuracy"], abs=1e-9)
