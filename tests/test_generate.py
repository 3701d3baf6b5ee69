"""``spikeforge generate``: mapping checks, the written files, atomicity, and Verilog that
lints clean for any core count from 1 to 32 where the network fits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from spikeforge.gen.chipgen import MappingError, check_mapping, generate
from spikeforge.gen.config import Config, load_config
from spikeforge.sim.runner import lint_verilog

# one layer of 32 neurons splits over any of 1..32 cores (one neuron each at 32)
ONE_LAYER = Config().replace(network={"layers": [12, 32], "timesteps": 4},
                             hardware={"lanes": 1, "max_neurons": 32, "max_inputs": 12,
                                       "wg_dataflow": "inplace"},
                             train={"batch_size": 1})
TWO_LAYERS = Config().replace(network={"layers": [12, 8, 4], "timesteps": 4},
                              hardware={"lanes": 1, "max_neurons": 8, "max_inputs": 12})


def _cfg_file(tmp_path, cfg, name="net.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    return p


def _run(*args):
    return subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", *args], capture_output=True, text=True)


def _lint(man, path):
    lint_verilog(path / "chip.v", man["top"])


@pytest.mark.parametrize("cores", [1, 7, 32])
def test_one_layer_any_core_count_lints(tmp_path, cores):
    out = tmp_path / "chip"
    man = generate(ONE_LAYER, out, cores=cores)
    assert sorted(p.name for p in out.iterdir()) == ["chip.v", "manifest.json", "report.md"]
    assert man["mesh"]["cores"] == cores
    # every neuron is on exactly one core, in order
    got = [(c["neuron_offset"], c["neurons"]) for c in man["cores"]]
    assert sum(n for _, n in got) == 32 and got[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(got, got[1:]))
    assert max(n for _, n in got) - min(n for _, n in got) <= 1
    _lint(man, out)


@pytest.mark.slow
@pytest.mark.parametrize("cores", range(1, 33))
def test_one_layer_every_core_count_lints(tmp_path, cores):
    man = generate(ONE_LAYER, tmp_path / "chip", cores=cores)
    _lint(man, tmp_path / "chip")


def test_two_layers_manifest(tmp_path):
    out = tmp_path / "chip"
    man = generate(TWO_LAYERS, out, cores=3)
    assert json.loads((out / "manifest.json").read_text()) == man
    layers = [(c["layer"], c["neuron_offset"], c["neurons"], c["fan_in"]) for c in man["cores"]]
    # 8 hidden neurons over 2 cores (the bigger layer gets the spare core), 4 outputs on 1
    assert layers == [(0, 0, 4, 12), (0, 4, 4, 12), (1, 0, 4, 8)]
    assert [c["errors"] for c in man["cores"]] == [False, False, True]
    assert man["mesh"] == {"rows": 2, "cols": 2, "cores": 3}
    assert man["cores"][2]["mesh"] == [1, 0]
    assert set(man["noc_planes"]) == {"spike", "error", "host"}
    assert man["noc_planes"]["spike"]["multicast"] and not man["noc_planes"]["error"]["multicast"]
    assert man["protocol_version"] == 1 and man["config_digest"] == TWO_LAYERS.replace(
        hardware={"cores": 3}).digest()
    _lint(man, out)


def test_mapping_refusals():
    with pytest.raises(MappingError, match="too few"):
        check_mapping(TWO_LAYERS, 1)
    with pytest.raises(MappingError, match="1..1024"):
        check_mapping(TWO_LAYERS, 0)
    with pytest.raises(MappingError, match="at most 12 cores"):
        check_mapping(TWO_LAYERS, 13)


def test_preset_mapping_and_estimate():
    geo = check_mapping(load_config("trainer-20core"))
    assert [(p.layer, p.geom.n_neurons) for p in geo.cores] == [(0, 8)] * 18 + [(1, 5)] * 2


@pytest.mark.parametrize("args,needle", [
    (("--cores", "0"), "1..1024"),
    (("--cores", "-3"), "1..1024"),
    (("--cores", "1"), "too few"),
    (("--cores", "x"), "--cores"),
    (("--config", "no-such"), "no-such"),
])
def test_cli_user_errors_leave_nothing(tmp_path, args, needle):
    out = tmp_path / "chip"
    r = _run("generate", *args, "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_writes_and_refuses_existing(tmp_path):
    cfgf = _cfg_file(tmp_path, TWO_LAYERS)
    out = tmp_path / "chip"
    r = _run("generate", "--config", str(cfgf), "--cores", "2", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{out}: 2 cores") and r.stderr == ""
    before = (out / "chip.v").read_text()
    r = _run("generate", "--config", str(cfgf), "--cores", "3", "-o", str(out), "-q")
    assert r.returncode == 2 and "exists" in r.stderr
    assert (out / "chip.v").read_text() == before          # untouched
    r = _run("generate", "--config", str(cfgf), "--cores", "3", "-o", str(out), "-q", "--force")
    assert r.returncode == 0 and json.loads((out / "manifest.json").read_text())["mesh"]["cores"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chip", "net.yaml"]   # no temp left
