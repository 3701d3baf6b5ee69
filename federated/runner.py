"""Start a Flower federation on this host and run spikeforge's apps on it.

Flower's deployment mode: one ``flower-superlink`` (the server side; it runs the
ServerApp of :mod:`spikeforge.federated.app` in a subprocess), one ``flower-supernode``
per worker (each runs the ClientApp for every message it gets), and ``flwr run`` to start
the run -- separate processes talking HTTP over 127.0.0.1 on ports the OS picks, exactly
what a deployment with one host per board runs (there the SuperNodes point at the
SuperLink's host instead).

Offline: every process gets ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1``,
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` and a private ``FLWR_HOME`` in the run
directory. Every process is started in its own session and its whole process group is
killed when the run ends, fails or is interrupted (Ctrl-C, SIGTERM); on Linux the children
also die with the runner if it is killed outright (their Flower subprocesses then exit on
their own once the SuperLink is gone: measured within 30 s). Every wait is bounded in time.

Fault injection (tests, benchmarks): :class:`Fault` kills the SuperNodes of some workers
shortly after a round starts (mid-round) and, with ``rejoin``, starts them again once that
round has ended.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FederatedError", "BoardError", "Fault", "FLOWER_ENV", "MIXED_GRACE", "WORKER_BACKENDS", "run_federated",
           "find_tool"]

#: The chips a worker can run on.
WORKER_BACKENDS = ("model", "sim", "board")

#: Default ``grace_fraction`` when model and sim workers mix: a round waits up to this many
#: times the quorum's time for the rest (the sim worker), not half of it.
MIXED_GRACE = 20.0

#: What makes Flower work offline (see DESIGN.md, "Federated learning").
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}

_APP_PYPROJECT = """\
# Written by spikeforge: the Flower app of `spikeforge federated` (code: spikeforge.federated.app).
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "spikeforge-federated"
version = "1.0.0"
description = "spikeforge integer FedAvg"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "spikeforge"

[tool.flwr.app.components]
serverapp = "spikeforge.federated.app:server_app"
clientapp = "spikeforge.federated.app:client_app"

[tool.flwr.app.config]
spec-file = ""
"""


class FederatedError(RuntimeError):
    """The federation could not be started or did not finish (message names the cause)."""


@dataclass(frozen=True)
class Fault:
    """Kill the SuperNodes of ``workers`` ``delay`` s after round ``round`` starts; restart them
    after that round ends when ``rejoin``."""

    round: int
    workers: tuple[int, ...]
    rejoin: bool = True
    delay: float = 0.5


def find_tool(name: str) -> str:
    """A Flower console script: next to this Python first (an unactivated venv), then on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise FederatedError(f"{name} not found (Flower is not installed): pip install 'spikeforge[fl]'")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when the runner dies, even by SIGKILL (no orphaned SuperNodes)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Federation:
    """The processes of one run; :meth:`close` kills every one of them."""

    def __init__(self, workdir: Path, workers: int, log):
        self.dir = workdir
        self.workers = workers
        self.log = log
        self.env = dict(os.environ, **FLOWER_ENV, FLWR_HOME=str(workdir / "flwr-home"),
                        PYTHONUNBUFFERED="1")
        # Flower starts flwr-serverapp / flwr-clientapp by name: make ours findable.
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), self.env.get("PATH", "")])
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = _free_port()
        self.restarts: dict[int, int] = {}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        logf = open(self.dir / f"{name}.log", "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=self.env, cwd=self.dir, start_new_session=True,
                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        logf.close()
        self.procs[name] = p
        return p

    def start_superlink(self, timeout: float = 60.0) -> None:
        self._spawn("superlink", [find_tool("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                  "--port", str(self.port)])
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.procs["superlink"].poll() is not None:
                raise FederatedError(f"flower-superlink exited ({self.procs['superlink'].returncode}); "
                                     f"see {self.dir / 'superlink.log'}")
            if time.monotonic() > deadline:
                raise FederatedError(f"flower-superlink did not listen on 127.0.0.1:{self.port} "
                                     f"within {timeout:.0f} s")
            time.sleep(0.2)

    def start_worker(self, k: int) -> None:
        n = self.restarts.get(k, -1) + 1
        self.restarts[k] = n
        self._spawn(f"worker{k}", [
            find_tool("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
            "--host", "127.0.0.1", "--port", str(_free_port()),
            "--node-config", f"partition-id={k} num-partitions={self.workers}"])

    def kill(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=5)
                if sig == signal.SIGTERM:
                    # the group may hold children (ClientApp/ServerApp processes)
                    os.killpg(p.pid, signal.SIGKILL)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break

    def kill_worker(self, k: int) -> None:
        """Kill worker ``k`` at once (SIGKILL to its whole group: a board that vanishes)."""
        p = self.procs.pop(f"worker{k}", None)
        if p is not None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)

    def submit(self, spec_file: Path, timeout: float = 120.0) -> str:
        app = self.dir / "app"
        app.mkdir(exist_ok=True)
        (app / "pyproject.toml").write_text(_APP_PYPROJECT)
        home = self.dir / "flwr-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{self.port}"\n'
            f"insecure = true\n")
        r = subprocess.run([find_tool("flwr"), "run", str(app), "local", "--format", "json",
                            "--run-config", f"spec-file={json.dumps(str(spec_file))}"],
                           capture_output=True, text=True, env=self.env, cwd=self.dir, timeout=timeout)
        (self.dir / "flwr-run.log").write_text(r.stdout + r.stderr)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = {"success": False, "error-message": (r.stderr or r.stdout or "(no output)").strip()}
        if r.returncode != 0 or not out.get("success"):
            msg = " ".join(str(out.get("error-message", "")).split()) or f"exit status {r.returncode}"
            raise FederatedError(f"flwr run failed: {msg}")
        return str(out.get("run-id"))

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def run_federated(cfg, *, workers: int, rounds: int, local_epochs: int = 1, partition: str = "iid",
                  seed: int = 0, quorum: int | None = None, faults: tuple[Fault, ...] = (),
                  round_timeout: float = 600.0, join_timeout: float = 60.0, min_grace: float = 5.0,
                  grace_fraction: float | None = None, shard_limit: int | None = None,
                  backends: list[str] | None = None, ports: list[str] | None = None,
                  baud: int = 3_000_000, timeout: float | None = None, workdir: str | Path | None = None,
                  progress=None) -> tuple[dict, list]:
    """Run ``rounds`` of integer FedAvg over ``workers`` Flower workers.

    ``cfg.train.seed`` is replaced by ``seed`` (initial weights; every worker derives its
    shuffling and spikes from it). ``quorum`` defaults to ``ceil(workers / 2)``. Returns
    ``(report, final_weights)``; raises :class:`FederatedError` when the federation fails or
    ``timeout`` (default: generous, from the rounds) passes. Round policy (``quorum``,
    ``join_timeout``, ``min_grace``, ``grace_fraction``, ``round_timeout``): see
    :mod:`spikeforge.federated.app`. ``shard_limit`` trains each worker on only the first N
    samples of its shard (quick smoke runs and tests).

    ``backends``: each worker's chip, ``model`` or ``sim`` (default: all ``model``). The
    simulated chip is built here, once, before the federation starts (``progress`` says
    so), so that no worker spends its round on a build. ``grace_fraction`` defaults to 0.5,
    or to :data:`MIXED_GRACE` when model and sim workers mix (a sim worker trains about
    10x slower and would otherwise be dropped as late). ``board`` workers drive the chips on
    ``ports`` (one per board worker, in worker order) at ``baud``; each is asked for its
    ``version`` before the federation starts (:class:`BoardError` if one does not answer or
    is another chip).
    """
    import torch

    from .partition import partition as split

    quorum = quorum if quorum is not None else (workers + 1) // 2
    if not 1 <= quorum <= workers:
        raise ValueError(f"quorum {quorum} must be between 1 and the {workers} workers")
    backends = list(backends) if backends is not None else ["model"] * workers
    if len(backends) != workers or not set(backends) <= set(WORKER_BACKENDS):
        raise ValueError(f"backends {backends}: need one of {', '.join(WORKER_BACKENDS)} for each of "
                         f"the {workers} workers")
    if grace_fraction is None:
        grace_fraction = MIXED_GRACE if len(set(backends)) > 1 else 0.5
    cfg = cfg.replace(train={"seed": seed})
    from ..model.data import load_dataset

    split(load_dataset(cfg.train.dataset).y_train, workers, partition, seed)  # fail early, here
    timeout = timeout if timeout is not None else 120.0 + rounds * (round_timeout + join_timeout)
    say = progress or (lambda msg: None)
    if "sim" in backends:
        _build_sim(cfg, say)
    board_ports = {}
    if "board" in backends:
        ids = [k for k, b in enumerate(backends) if b == "board"]
        if len(ports or []) != len(ids):
            raise ValueError(f"{len(ports or [])} serial ports for {len(ids)} board workers")
        board_ports = {str(k): p for k, p in zip(ids, ports)}
        for k, p in board_ports.items():
            _probe_board(cfg, p, baud, k, say)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="spikeforge-fl-")
        workdir = tmp.name
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    spec = {"config": cfg.to_dict(), "workers": workers, "rounds": rounds, "local_epochs": local_epochs,
            "partition": partition, "seed": seed, "quorum": quorum, "round_timeout": round_timeout,
            "join_timeout": join_timeout, "min_grace": min_grace, "grace_fraction": grace_fraction,
            "shard_limit": shard_limit, "backends": backends, "ports": board_ports, "baud": baud,
            "status_file": str(wd / "status.jsonl"), "report_file": str(wd / "report.json"),
            "weights_file": str(wd / "weights.pt")}
    for key in ("status_file", "report_file", "weights_file"):
        Path(spec[key]).unlink(missing_ok=True)
    spec_file = wd / "spec.json"
    spec_file.write_text(json.dumps(spec))
    fed = _Federation(wd, workers, say)
    t0 = time.monotonic()
    old_term = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM too must reach the `finally` that kills the federation's processes.
        old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        fed.start_superlink()
        for k in range(workers):
            fed.start_worker(k)
        fed.submit(spec_file)
        say(f"federation up: SuperLink on 127.0.0.1:{fed.port}, {workers} SuperNodes")
        _follow(fed, spec, faults, t0 + timeout, say)
        report = json.loads(Path(spec["report_file"]).read_text())
        weights = torch.load(spec["weights_file"])
    finally:
        fed.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if tmp is not None:
            tmp.cleanup()
    report.update(partition=partition, seed=seed, local_epochs=local_epochs, quorum=quorum,
                  config_digest=cfg.digest(), total_seconds=time.monotonic() - t0,
                  rejoins={str(k): n for k, n in fed.restarts.items() if n})
    return report, weights


def _build_sim(cfg, say) -> None:
    """Build (or find cached) the pipe simulator of ``cfg`` that the sim workers run."""
    from ..sim.pipe import build_pipe_sim

    say("building the simulated chip (Verilator; 20-90 s the first time, then cached) ...")
    t0 = time.monotonic()
    try:
        exe = build_pipe_sim(cfg, quiet=True)
    except Exception as e:  # Verilator missing, a compile error, ...: name it, end the run
        raise FederatedError(f"cannot build the simulated chip: {type(e).__name__}: {e}") from None
    say(f"simulated chip ready in {time.monotonic() - t0:.1f} s ({exe.parent.parent})")


class BoardError(FederatedError):
    """A board worker's serial port cannot be opened or no (matching) chip answers on it."""


def _probe_board(cfg, port: str, baud: int, worker: int, say) -> None:
    """Open ``port`` and check that the config's chip answers ``version`` there."""
    from ..host.link import LinkChip, LinkError, SerialTransport

    try:
        t = SerialTransport(port, baud, timeout=2.0)
    except OSError as e:
        raise BoardError(f"worker {worker}: --ports: {e}") from None
    try:
        LinkChip(cfg, t, retries=1)
    except LinkError as e:
        raise BoardError(f"worker {worker}: no spikeforge chip answered on {port} ({e})") from None
    except ValueError as e:
        raise BoardError(f"worker {worker}: {port}: {e}") from None
    finally:
        t.close()
    say(f"worker {worker}: chip found on {port}")


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _follow(fed: _Federation, spec: dict, faults, deadline: float, say) -> None:
    """Follow the server's status file until it is done; inject the faults on the way."""
    status = Path(spec["status_file"])
    seen = 0
    killed: dict[int, tuple[int, ...]] = {}
    while True:
        lines = status.read_text().splitlines() if status.exists() else []
        for line in lines[seen:]:
            ev = json.loads(line)
            kind = ev["event"]
            if kind == "error":
                raise FederatedError(f"the server failed: {ev['message']} (logs in {fed.dir})")
            if kind == "done":
                return
            if kind == "round_start":
                say(f"round {ev['round']}: sent to {ev['addressed']} workers")
                for f in faults:
                    if f.round == ev["round"]:
                        time.sleep(f.delay)
                        for k in f.workers:
                            fed.kill_worker(k)
                        say(f"round {ev['round']}: killed worker(s) {', '.join(map(str, f.workers))}")
                        if f.rejoin:
                            killed[f.round] = f.workers
            if kind == "round_end":
                say(f"round {ev['round']}: accuracy {100 * ev['accuracy']:.2f} %, "
                    f"participants {ev['participants']}")
                for k in killed.pop(ev["round"], ()):
                    fed.start_worker(k)
                    say(f"worker {k} restarted")
        seen = len(lines)
        if fed.procs["superlink"].poll() is not None:
            raise FederatedError(f"flower-superlink exited ({fed.procs['superlink'].returncode}); "
                                 f"see {fed.dir / 'superlink.log'}")
        if time.monotonic() > deadline:
            raise FederatedError(f"the federated run did not finish in time (logs in {fed.dir})")
        time.sleep(0.1)
