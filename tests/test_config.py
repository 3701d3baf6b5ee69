"""The configuration: every invalid input is a ConfigError naming the key; presets load."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from spikeforge.gen.config import (
    PRESETS, PRESETS_DIR, Config, ConfigError, HardwareConfig, NetworkConfig, config_from_dict,
    load_config,
)

# (id, data as loaded from YAML, strings the message must contain: the key, the value, ...)
INVALID = [
    # top level and sections
    ("top-level-list", [1, 2], ["top level", "mapping", "[1, 2]"]),
    ("top-level-string", "network", ["top level", "'network'"]),
    ("unknown-section", {"hardwre": {}}, ["hardwre", "unknown section", "hardware"]),
    ("unknown-key", {"hardware": {"core": 4}}, ["hardware.core", "unknown key", "cores"]),
    ("unknown-key-network", {"network": {"timestep": 8}}, ["network.timestep", "timesteps"]),
    ("section-is-list", {"network": [64, 10]}, ["network", "mapping", "[64, 10]", "layers"]),
    ("section-is-int", {"train": 5}, ["train", "mapping", "5"]),
    ("board-unknown", {"board": "de10-nano"}, ["board", "'de10-nano'", "ulx3s-85f"]),
    ("board-not-string", {"board": 85}, ["board", "85", "ulx3s-85f"]),
    # network
    ("layers-string", {"network": {"layers": "64-128-10"}}, ["network.layers", "'64-128-10'", "list"]),
    ("layers-one", {"network": {"layers": [64]}}, ["network.layers", "[64]", "at least 2"]),
    ("layers-empty", {"network": {"layers": []}}, ["network.layers", "[]", "at least 2"]),
    ("layer-zero", {"network": {"layers": [64, 0, 10]}}, ["network.layers[1]", "0", "[1, 65536]"]),
    ("layer-float", {"network": {"layers": [64, 12.5, 10]}}, ["network.layers[1]", "12.5", "integer"]),
    ("layer-string", {"network": {"layers": [64, "128", 10]}}, ["network.layers[1]", "'128'", "integer"]),
    ("timesteps-zero", {"network": {"timesteps": 0}}, ["network.timesteps", "0", "[1, 256]"]),
    ("timesteps-bool", {"network": {"timesteps": True}}, ["network.timesteps", "True", "integer"]),
    ("timesteps-string", {"network": {"timesteps": "8"}}, ["network.timesteps", "'8'", "integer"]),
    ("timesteps-float", {"network": {"timesteps": 8.0}}, ["network.timesteps", "8.0", "integer"]),
    ("timesteps-list", {"network": {"timesteps": [8]}}, ["network.timesteps", "[8]", "integer"]),
    # neuron
    ("threshold-negative", {"neuron": {"threshold": -1}}, ["neuron.threshold", "-1", ">= 1"]),
    ("threshold-too-big", {"neuron": {"threshold": 1 << 19}}, ["neuron.threshold", "524288", "membrane_bits"]),
    ("leak-zero", {"neuron": {"leak_shift": 0}}, ["neuron.leak_shift", "0", "[1, 16]"]),
    ("leak-vs-membrane", {"neuron": {"leak_shift": 12, "threshold": 100}, "arithmetic": {"membrane_bits": 12}},
     ["neuron.leak_shift", "12", "membrane_bits=12"]),
    ("surrogate-vs-membrane", {"neuron": {"surrogate_shift": 20}}, ["neuron.surrogate_shift", "20", "membrane_bits"]),
    ("surrogate-null", {"neuron": {"surrogate_shift": None}}, ["neuron.surrogate_shift", "None", "integer"]),
    # arithmetic
    ("weight-bits-one", {"arithmetic": {"weight_bits": 1}}, ["arithmetic.weight_bits", "1", "[2, 32]"]),
    ("weight-bits-huge", {"arithmetic": {"weight_bits": 64}}, ["arithmetic.weight_bits", "64", "[2, 32]"]),
    ("weight-frac-too-big", {"arithmetic": {"weight_bits": 8, "weight_frac": 8}},
     ["arithmetic.weight_frac", "8", "[0, 7]"]),
    ("membrane-bits-string", {"arithmetic": {"membrane_bits": "20"}}, ["arithmetic.membrane_bits", "'20'"]),
    ("grad-bits-narrow", {"arithmetic": {"grad_bits": 16}}, ["arithmetic.grad_bits", "16", "dv_bits"]),
    ("rounding-unknown", {"arithmetic": {"rounding": "floor"}}, ["arithmetic.rounding", "'floor'", "nearest", "stochastic"]),
    ("rounding-not-string", {"arithmetic": {"rounding": 1}}, ["arithmetic.rounding", "1", "nearest"]),
    ("lfsr-seed-negative", {"arithmetic": {"lfsr_seed": -5}}, ["arithmetic.lfsr_seed", "-5"]),
    ("loss-shift-vs-error-bits", {"arithmetic": {"loss_shift": 15, "error_bits": 16}},
     ["arithmetic.loss_shift", "15", "error_bits=16", "<= 14"]),
    ("lr-shift-vs-grad-bits", {"arithmetic": {"lr_shift": 31, "grad_bits": 30}},
     ["arithmetic.lr_shift", "31", "grad_bits=30"]),
    ("error-sum-over-63-bits", {"arithmetic": {"weight_bits": 32, "dv_bits": 30, "grad_bits": 40}},
     ["arithmetic.weight_bits + arithmetic.dv_bits", "32 + 30", "at most 63"]),
    # train
    ("dataset-unknown", {"train": {"dataset": "cifar10"}}, ["train.dataset", "'cifar10'", "digits", "mnist"]),
    ("batch-zero", {"train": {"batch_size": 0}}, ["train.batch_size", "0", "[1, 65536]"]),
    ("epochs-float", {"train": {"epochs": 2.5}}, ["train.epochs", "2.5", "integer"]),
    ("seed-negative", {"train": {"seed": -1}}, ["train.seed", "-1"]),
    ("target-count-over-T", {"train": {"target_count": 9}}, ["train.target_count", "9", "timesteps=8"]),
    ("target-count-bool", {"train": {"target_count": True}}, ["train.target_count", "True", "integer"]),
    # hardware
    ("cores-zero", {"hardware": {"cores": 0}}, ["hardware.cores", "0", "[1, 1024]"]),
    ("cores-string", {"hardware": {"cores": "20"}}, ["hardware.cores", "'20'", "integer"]),
    ("lanes-not-pow2", {"hardware": {"lanes": 6}}, ["hardware.lanes", "6", "power of two"]),
    ("lanes-too-many", {"hardware": {"lanes": 128}}, ["hardware.lanes", "128", "[1, 64]"]),
    ("max-inputs-vs-fan-in", {"network": {"layers": [784, 128, 10]}, "hardware": {"max_inputs": 512}},
     ["hardware.max_inputs", "512", "784"]),
    ("max-neurons-zero", {"hardware": {"max_neurons": 0}}, ["hardware.max_neurons", "0"]),
    ("wg-dataflow-unknown", {"hardware": {"wg_dataflow": "streaming"}},
     ["hardware.wg_dataflow", "'streaming'", "accumulate", "inplace"]),
    ("wg-dataflow-not-string", {"hardware": {"wg_dataflow": 1}}, ["hardware.wg_dataflow", "1", "accumulate"]),
    ("wg-dataflow-inplace-batch", {"hardware": {"wg_dataflow": "inplace"}, "train": {"batch_size": 4}},
     ["hardware.wg_dataflow", "'inplace'", "train.batch_size=1", "train.batch_size=4"]),
]


def test_wg_dataflow_default_and_inplace():
    assert Config().hardware.wg_dataflow == "accumulate"
    cfg = config_from_dict({"hardware": {"wg_dataflow": "inplace"}, "train": {"batch_size": 1}})
    assert cfg.hardware.wg_dataflow == "inplace"
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("data,needles", [pytest.param(d, n, id=i) for i, d, n in INVALID])
def test_invalid_config_names_key_and_value(data, needles):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in message {msg!r}"
    assert "\n" not in msg


def test_enough_invalid_cases():
    assert len(INVALID) >= 30


# (id, file content, strings the message must contain)
INVALID_FILES = [
    ("yaml-syntax", "network:\n  layers: [64, 10\n", ["not valid YAML", "line"]),
    ("yaml-tab-indent", "network:\n\tlayers: [64, 10]\n", ["not valid YAML"]),
    ("duplicate-key", "hardware:\n  cores: 2\n  cores: 3\n", ["'cores'", "twice", "line 3"]),
    ("empty", "", ["empty"]),
    ("only-comments", "# nothing here\n", ["empty"]),
    ("scalar", "42\n", ["top level", "42"]),
    ("bad-value-names-file", "hardware:\n  lanes: 3\n", ["cfg.yaml", "hardware.lanes", "3"]),
]


@pytest.mark.parametrize("text,needles", [pytest.param(t, n, id=i) for i, t, n in INVALID_FILES])
def test_invalid_file(tmp_path, text, needles):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    for needle in needles:
        assert needle in str(info.value)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="no such config file or preset"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="presets: .*trainer-20core"):
        load_config("no-such-preset")


def test_directory_and_binary_file(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(p)


def test_defaults_and_empty_sections():
    assert config_from_dict({}) == Config()
    assert config_from_dict(None) == Config()
    assert config_from_dict({"network": None, "hardware": {}}) == Config()


@pytest.mark.parametrize("name", ["digits", "mnist", "trainer-20core", "federated-worker"])
def test_preset_exists(name):
    assert name in PRESETS
    assert (PRESETS_DIR / f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = load_config(name)
    assert cfg == load_config(PRESETS_DIR / f"{name}.yaml")
    text = (PRESETS_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# "), "a preset starts with a one-line description comment"
    import yaml

    arith = yaml.safe_load(text).get("arithmetic", {})
    assert set(arith) <= {"rounding", "lfsr_seed"}, "presets leave the number format at its tuned defaults"


def test_preset_contents():
    t = load_config("trainer-20core")
    assert t.hardware.cores == 20 and t.board == "ulx3s-85f"
    assert t.network.layers[0] == 784 and t.network.layers[-1] == 10 and t.train.dataset == "mnist"
    w = load_config("federated-worker")
    assert w.board in ("ulx3s-45f", "ulx3s-25f")
    assert w.network.layers[0] == 64 and w.train.dataset == "digits"
    assert load_config("digits").network.layers[0] == 64
    assert load_config("mnist").network.layers[0] == 784


def test_presets_match_dataset_inputs():
    from spikeforge.model import data

    for name in PRESETS:
        cfg = load_config(name)
        assert cfg.network.layers[0] == data.DATASET_INPUTS[cfg.train.dataset], name


@pytest.mark.parametrize("name", [None, *PRESETS])
def test_round_trip(name):
    cfg = Config() if name is None else load_config(name)
    d = cfg.to_dict()
    again = config_from_dict(d)
    assert again == cfg
    assert again.digest() == cfg.digest()
    assert again.to_dict() == d


def test_round_trip_through_yaml(tmp_path):
    import yaml

    cfg = load_config("trainer-20core")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(p) == cfg


def test_digest_stable():
    a = config_from_dict({"hardware": {"cores": 4, "lanes": 8}, "train": {"seed": 3}})
    b = config_from_dict({"train": {"seed": 3}, "hardware": {"lanes": 8, "cores": 4}})
    assert a.digest() == b.digest()
    assert len(a.digest()) == 16 and int(a.digest(), 16) >= 0
    assert a.digest() != Config().digest()
    assert a.replace(train={"seed": 4}).digest() != a.digest()
    # the same in a fresh interpreter (no dependence on hash randomisation or process state)
    code = ("from spikeforge.gen.config import config_from_dict as f; "
            "print(f({'hardware': {'cores': 4, 'lanes': 8}, 'train': {'seed': 3}}).digest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == a.digest()


def test_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.board = "icebreaker"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hardware.cores = 20  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.network.layers = (1, 2)  # type: ignore[misc]
    assert isinstance(cfg.network.layers, tuple)


def test_replace_validates():
    cfg = Config().replace(hardware={"cores": 20}, train={"epochs": 2})
    assert cfg.hardware.cores == 20 and cfg.train.epochs == 2 and cfg.hardware.lanes == Config().hardware.lanes
    with pytest.raises(ConfigError, match="hardware.lanes"):
        Config().replace(hardware={"lanes": 3})
    with pytest.raises(ConfigError, match="train.epochs"):
        Config().replace(train={"epochs": 0})


def test_constructed_in_python():
    assert NetworkConfig(layers=[4, 3]).layers == (4, 3)
    with pytest.raises(ConfigError, match="hardware: expected a HardwareConfig"):
        Config(hardware={"cores": 2})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hardware.cores"):
        Config(hardware=HardwareConfig(cores=0))


def test_target_count_default_is_timesteps():
    cfg = config_from_dict({"network": {"timesteps": 12}})
    assert cfg.target_count == 12
    assert config_from_dict({"train": {"target_count": 3}}).target_count == 3
