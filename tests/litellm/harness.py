"""A LiteLLM proxy on loopback for tests/transport/test_litellm.py: start it, wait until it is ready,
kill it (-9) and start it again on the same port, and read what it answered from its access
log; and a trap that counts any attempt of it to reach beyond loopback."""

from __future__ import annotations

import collections
import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from ..conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).parent / "proxy.yaml"
LITELLM = Path(os.environ.get("LLMBATCH_LITELLM") or ROOT / ".venv-litellm" / "bin" / "litellm")
START_DEADLINE = 90.0  # seconds for the proxy to answer its readiness probe (7-32 s here)
ACCESS = re.compile(r'"POST (?:/v1)?/chat/completions HTTP/1\.1" (\d{3})')

_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, so a killed pytest
    leaves no proxy behind."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Trap:
    """A listener set as the proxy's HTTP(S)_PROXY: any attempt of the proxy to reach a host
    that is not loopback (cost map, telemetry, a real provider) lands here and is counted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.attempts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class Proxy:
    """One ``litellm`` process on a fixed loopback port; ``kill`` and ``start`` again restart
    it on the same port. Its output goes to one log file across restarts."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: list[float] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = [str(LITELLM), "--config", str(CONFIG), "--host", "127.0.0.1",
                   "--port", str(self.port)]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.workdir, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_parent)
        wait_until(self._ready, START_DEADLINE, "the LiteLLM proxy's /health/readiness")
        self.start_seconds.append(time.monotonic() - started)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"litellm exited with {self.proc.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/readiness",
                                        timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no graceful shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def statuses(self) -> collections.Counter[int]:
        """The status of every chat request the proxy answered, from its access log."""
        return collections.Counter(
            int(m.group(1)) for m in ACCESS.finditer(self.log_path.read_text(errors="replace"))
        )

    def seen_since(self, before: collections.Counter[int], answered: int) -> dict[int, int]:
        """Requests by status since ``before``, once at least ``answered`` 200s are logged
        (the access line is written just after the answer is sent)."""
        wait_until(lambda: self.statuses()[200] - before[200] >= answered, 10,
                 f"{answered} answers in the proxy's access log")
        now = self.statuses()
        return {status: now[status] - before[status] for status in now if now[status] > before[status]}

    def remote_addresses(self) -> list[str]:
        """Peers of the proxy's open internet sockets right now."""
        assert self.proc is not None
        return [c.raddr.ip for c in psutil.Process(self.proc.pid).net_connections("inet")
                if c.raddr]
