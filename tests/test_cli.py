"""The ``spikeforge`` command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from spikeforge.gen.config import PRESETS, Config, config_from_dict, load_config


def run(*args: str, cwd=None, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "spikeforge.gen.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=e, timeout=timeout)


def assert_user_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, nothing on stdout, exactly one line on stderr, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("spikeforge: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"spikeforge \S+\n", r.stdout)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    assert "config" in r.stdout and "train" in r.stdout


def test_no_command_is_usage_error():
    assert_user_error(run(), "required")


def test_unknown_command():
    assert_user_error(run("frobnicate"), "frobnicate")


@pytest.mark.parametrize("preset", PRESETS)
def test_config_validate_presets(preset):
    r = run("config", "validate", preset)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ok: {preset}: network ")
    assert len(r.stdout.splitlines()) == 1
    assert load_config(preset).digest() in r.stdout
    assert r.stderr == ""


def test_config_validate_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("hardware:\n  cores: 7\n")
    r = run("config", "validate", str(p))
    assert r.returncode == 0
    assert "7 cores" in r.stdout


@pytest.mark.parametrize("text,needles", [
    ("hardware:\n  lanes: 3\n", ["hardware.lanes", "3", "power of two"]),
    ("hardware:\n  cores: twenty\n", ["hardware.cores", "'twenty'", "integer"]),
    ("network:\n  layers: [64, 10\n", ["not valid YAML", "line"]),
    ("nework: {}\n", ["nework", "unknown section"]),
    ("", ["empty"]),
    ("train:\n  dataset: cifar10\n", ["train.dataset", "cifar10", "digits"]),
])
def test_config_validate_bad(tmp_path, text, needles):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert_user_error(run("config", "validate", str(p)), *needles)


def test_config_validate_missing_file(tmp_path):
    assert_user_error(run("config", "validate", str(tmp_path / "missing.yaml")), "missing.yaml",
                      "no such config file")


def test_config_validate_warns_on_dataset_mismatch(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("train:\n  dataset: mnist\n")  # default network has 64 inputs
    r = run("config", "validate", str(p))
    assert r.returncode == 0
    assert r.stdout.startswith("ok: ")
    assert "warning" in r.stderr and "784" in r.stderr


@pytest.mark.parametrize("spec", [None, "trainer-20core"])
def test_config_show_round_trips(tmp_path, spec):
    r = run("config", "show", *([spec] if spec else []))
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(r.stdout)
    expect = Config() if spec is None else load_config(spec)
    assert config_from_dict(data) == expect
    assert set(data) == {"network", "neuron", "arithmetic", "train", "hardware", "board"}
    # what `show` prints is itself a valid config file
    p = tmp_path / "shown.yaml"
    p.write_text(r.stdout)
    assert run("config", "validate", str(p)).returncode == 0


def test_config_show_bad():
    assert_user_error(run("config", "show", "no-such-preset"), "no-such-preset")


def test_config_presets():
    r = run("config", "presets")
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == list(PRESETS)
    assert "trainer-20core" in names and "federated-worker" in names


def test_train_unknown_dataset():
    assert_user_error(run("train", "--dataset", "imagenet"), "imagenet", "digits")


def test_train_backends_exist():
    from spikeforge.gen.cli import CHIP_BACKENDS, TRAIN_BACKENDS
    from spikeforge.model.train import BACKENDS

    assert set(TRAIN_BACKENDS) <= set(BACKENDS) | set(CHIP_BACKENDS)
    assert "model" in TRAIN_BACKENDS and set(CHIP_BACKENDS) == {"sim", "board"}


def test_train_unknown_backend():
    assert_user_error(run("train", "--backend", "board"), "board")


@pytest.mark.parametrize("args,needles", [
    (["--epochs", "x"], ["--epochs", "'x'"]),
    (["--epochs", "0"], ["train.epochs", "0"]),
    (["--batch-size", "-3"], ["train.batch_size", "-3"]),
    (["--seed", "-1"], ["train.seed", "-1"]),
    (["--config", "digits", "--dataset", "mnist"], ["network.layers[0]", "784"]),
    (["--config", "/nonexistent/x.yaml"], ["/nonexistent/x.yaml"]),
    (["--report", "/nonexistent/dir/r.json"], ["--report", "/nonexistent/dir"]),
    (["--limit", "0"], ["--limit", "0"]),
    (["--limit", "x"], ["--limit", "'x'"]),
    (["--backend", "sim", "--config", "mnist"], ["--backend sim", "hardware.cores"]),
])
def test_train_bad_flags(args, needles):
    assert_user_error(run("train", *args), *needles)


def test_train_missing_dataset_package(tmp_path):
    # Hide scikit-learn (digits) behind a module that fails to import.
    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    r = run("train", "--epochs", "1", env={"PYTHONPATH": str(tmp_path)})
    assert_user_error(r, "scikit-learn")


TRAIN_LINE = re.compile(
    r"test accuracy: (\d+\.\d\d) % \(digits, model backend, 1 epoch, seed (\d+)\)")


def test_train_tiny_run(tmp_path):
    report = tmp_path / "r.json"
    r = run("train", "--backend", "model", "--dataset", "digits", "--epochs", "1", "--seed", "3",
            "--report", str(report))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    m = TRAIN_LINE.fullmatch(lines[-1])
    assert m, lines
    assert m.group(2) == "3"
    assert 0.0 <= float(m.group(1)) <= 100.0
    # stderr is not a TTY here: one progress line per epoch, no carriage-return spam
    assert "\r" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "epoch 1/1" in r.stderr
    rep = json.loads(report.read_text())
    assert rep["backend"] == "model" and len(rep["epochs"]) == 1
    assert abs(100 * rep["test_accuracy"] - float(m.group(1))) < 0.006
    assert rep["config"]["train"]["seed"] == 3


def test_train_quiet_is_silent_on_stderr():
    r = run("train", "--epochs", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines()[-1].startswith("test accuracy: ")


def test_sim_usage_error():
    assert_user_error(run("sim", "core", "--samples", "0"), "--samples")


def test_main_in_process(capsys):
    from spikeforge.gen.cli import main

    assert main(["config", "validate", "digits"]) == 0
    assert capsys.readouterr().out.startswith("ok: digits: ")
    assert main(["config", "validate", "no-such-preset"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("spikeforge: error: ")


def test_progress_bar_on_a_tty():
    import io

    from spikeforge.gen.cli import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    p = Progress(s, epochs=2)
    for done in range(1, 11):
        p(done, 10, {"epoch": (done - 1) // 5, "loss": 1.5, "train_accuracy": 0.5})
    p.close()
    text = s.getvalue()
    assert "\r[" in text and "100.0 %" in text and "epoch 2/2" in text
    assert text.endswith("\n")
    # throttled: far fewer redraws than steps would be drawn for a fast loop
    assert text.count("\r") <= 10


def test_progress_not_a_tty_one_line_per_epoch():
    import io

    from spikeforge.gen.cli import Progress

    s = io.StringIO()
    p = Progress(s, epochs=3)
    for done in range(1, 31):
        p(done, 30, {"epoch": (done - 1) // 10, "train_accuracy": 0.25})
    p.close()
    lines = s.getvalue().splitlines()
    assert len(lines) == 3
    assert [("epoch %d/3" % i) in lines[i - 1] for i in (1, 2, 3)] == [True] * 3


@pytest.mark.parametrize("argv,needle", [
    (("--cores", "0"), "--cores"),
    (("--cores", "1"), "too few"),
    (("--input", "digits"), "--input digits needs"),
    (("--config", "no-such-preset"), "no-such-preset"),
])
def test_sim_chip_user_errors(argv, needle):
    """Bad input to `sim chip` is refused before anything is built: one line, exit 2."""
    assert_user_error(run("sim", "chip", *argv), needle)
