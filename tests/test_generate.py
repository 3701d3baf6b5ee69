"""``spikeforge generate``: mapping checks, the written files, atomicity, and Verilog that
lints clean for any core count from 1 to 32 where the network fits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from spikeforge.gen.chipgen import RESOURCE_ESTIMATE, MappingError, check_mapping, estimate, generate
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


@pytest.mark.parametrize("cores", [1, 2, 3, 7, 32])
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


def _ubits(n):
    return max(1, (n - 1).bit_length())


def test_manifest_memory_map_and_flits(tmp_path):
    """The memory map and flit widths, recomputed here from the config and the mesh."""
    cfg = Config().replace(network={"layers": [12, 10, 5], "timesteps": 4},
                           hardware={"lanes": 2, "max_neurons": 4, "max_inputs": 12})
    man = generate(cfg, tmp_path / "chip", cores=5)
    T, P, a = 4, 2, cfg.arithmetic
    rows, cols = man["mesh"]["rows"], man["mesh"]["cols"]
    assert (rows, cols) == (2, 3)
    for c in man["cores"]:
        nb = -(-c["neurons"] // P)
        mem, inv = c["memory"], {m["name"]: (m["words"], m["bits"]) for m in c["memory"]["memories"]}
        assert c["kind"] == f"layer{c['layer']}_{c['fan_in']}x{c['neurons']}"
        assert c["mesh"] == [c["core"] // cols, c["core"] % cols]
        assert (mem["weight_banks"], mem["weight_words_per_bank"], mem["weight_bits"]) == (P, nb * c["fan_in"], 16)
        # the summary agrees with the memories of the elaborated core
        for k in range(P):
            assert inv[f"core.w{k}"] == (nb * c["fan_in"], a.weight_bits)
            assert inv[f"core.wg.g{k}"] == (nb * c["fan_in"], a.grad_bits)     # accumulate dataflow
        assert inv["core.s_hist"] == inv["core.m_hist"] == (max(T * nb, 2), P)
        assert mem["spike_mask_history_words"] == T * nb and mem["spike_mask_history_bits"] == P
        assert inv["core.ev_addr"] == (T * c["fan_in"], _ubits(c["fan_in"])) and mem["event_buffer_words"] == T * c["fan_in"]
        assert ("core.ds0" in inv) == (c["layer"] == 0)                       # hidden cores take ds
        assert mem["total_bits"] == sum(w * b for w, b in inv.values())
    # flits: payload + destination (+ lift; multicast: lo/hi and the one/two row flags)
    pos = _ubits(rows) + _ubits(cols)
    for name, p in man["noc_planes"].items():
        assert p["payload_bits"] == sum(p["fields"].values())
        dst = 2 * pos if p["multicast"] else pos
        assert p["inject_bits"] == p["payload_bits"] + dst
        assert p["flit_bits"] == p["payload_bits"] + dst + 1 + (2 if p["multicast"] else 0)
    assert man["noc_planes"]["host"]["fields"]["i"] == 16 == man["noc_planes"]["host"]["fields"]["j"]
    # the estimate adds up
    est = man["resource_estimate"]
    for r in ("comb", "ff", "ebr", "dsp"):
        assert est["total"][r] == sum(k["cores"] * k[r] for k in est["per_kind"].values()) + est["host_link"][r]
    assert not est["all_measured"]
    report = (tmp_path / "chip" / "report.md").read_text()
    assert "ESTIMATE" in report and "| 4 | layer1_10x1 | 1 | 4..4 | 10 | (1, 1) |" in report


def test_mapping_refusals():
    with pytest.raises(MappingError, match=r"hardware.cores: 1 cores are too few .* need 1 \+ 1 = 2"):
        check_mapping(TWO_LAYERS.replace(hardware={"cores": 1}))
    with pytest.raises(MappingError, match=r"--cores: 1 cores are too few"):
        check_mapping(TWO_LAYERS, 1)
    with pytest.raises(MappingError, match="1..1024"):
        check_mapping(TWO_LAYERS, 0)
    with pytest.raises(MappingError, match="1..1024"):
        check_mapping(TWO_LAYERS, 1025)
    with pytest.raises(MappingError, match="1..1024"):
        check_mapping(TWO_LAYERS, True)
    with pytest.raises(MappingError, match="at most 12 cores"):
        check_mapping(TWO_LAYERS, 13)
    # lanes 4 but max_neurons 2: a core holds a whole block of 4
    with pytest.raises(MappingError, match="core 0 .* holds 4 neurons, more than hardware.max_neurons=2"):
        check_mapping(TWO_LAYERS.replace(hardware={"lanes": 4, "max_neurons": 2}), 3)
    # 16-bit command indices
    wide = Config().replace(network={"layers": [12, 65536]}, hardware={"max_neurons": 65536, "max_inputs": 12})
    with pytest.raises(MappingError, match="neurons 65536 does not fit the 16-bit command indices"):
        check_mapping(wide, 1)
    wide = Config().replace(network={"layers": [65536, 4]}, hardware={"max_neurons": 4, "max_inputs": 65536})
    with pytest.raises(MappingError, match="fan-in 65536 does not fit the 16-bit"):
        check_mapping(wide, 1)


def test_preset_mapping_and_estimate():
    geo = check_mapping(load_config("trainer-20core"))
    assert [(p.layer, p.geom.n_neurons) for p in geo.cores] == [(0, 8)] * 18 + [(1, 5)] * 2
    assert (geo.rows, geo.cols) == (4, 5)
    est = estimate(geo)
    R = RESOURCE_ESTIMATE
    hidden = sum(R[k]["comb"] for k in ("core_784x8", "router", "adapters_first_layer", "error_reduce"))
    out = sum(R[k]["comb"] for k in ("core_144x5", "router", "adapters_later_layer"))
    assert est["all_measured"]
    assert est["per_kind"]["layer0_784x8"]["cores"] == 18 and est["per_kind"]["layer0_784x8"]["comb"] == hidden
    assert est["total"]["comb"] == 18 * hidden + 2 * out + R["host_link"]["comb"]
    assert est["total"]["dsp"] == 20


@pytest.mark.slow
def test_preset_default_cli(tmp_path):
    """``spikeforge generate`` with no flags: the 20-core preset into build/chip-trainer-20core-20c."""
    r = subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", "generate"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "build" / "chip-trainer-20core-20c"
    assert r.stdout.startswith(f"{out.relative_to(tmp_path)}: 20 cores on a 4 x 5 mesh")
    man = json.loads((out / "manifest.json").read_text())
    assert [c["kind"] for c in man["cores"]] == ["layer0_784x8"] * 18 + ["layer1_144x5"] * 2
    assert man["cores"][0]["memory"]["weight_words_per_bank"] == 8 * 784
    assert man["config_digest"] == load_config("trainer-20core").digest()
    _lint(man, out)


@pytest.mark.parametrize("args,needle", [
    (("--cores", "0"), "1..1024"),
    (("--cores", "-3"), "1..1024"),
    (("--cores", "1"), "--cores: 1 cores are too few"),
    (("--cores", "200"), "splits over at most 154 cores"),
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


def test_cli_default_dir_and_progress(tmp_path):
    cfgf = _cfg_file(tmp_path, TWO_LAYERS)
    r = subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", "generate", "--config", str(cfgf),
                        "--cores", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "build" / "chip-net-2c"
    assert r.stdout.startswith("build/chip-net-2c: 2 cores") and len(r.stdout.splitlines()) == 1
    assert "generate: " in r.stderr                            # progress without -q
    assert (out / "chip.v").read_text().count("module spikeforge_chip(") == 1
    # the directory gets the umask's permissions, not mkdtemp's private 0700
    mask = os.umask(0)
    os.umask(mask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~mask


def _boom(*args, **kwargs):
    raise RuntimeError("emission failed")


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    """An error while writing leaves no DIR, no temporary and no parent this call made."""
    import spikeforge.gen.verilog as verilog

    monkeypatch.setattr(verilog, "emit_verilog", _boom)
    with pytest.raises(RuntimeError, match="emission failed"):
        generate(TWO_LAYERS, tmp_path / "a" / "b" / "chip", cores=3)
    assert list(tmp_path.iterdir()) == []


def test_failure_with_force_keeps_old(tmp_path, monkeypatch):
    import spikeforge.gen.verilog as verilog

    out = tmp_path / "chip"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    monkeypatch.setattr(verilog, "emit_verilog", _boom)
    with pytest.raises(RuntimeError):
        generate(TWO_LAYERS, out, cores=3, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["chip"] and (out / "keep.txt").read_text() == "old"
