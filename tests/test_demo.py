"""``make demo`` (``python -m llmbatch_pd``) says its answers are the simulator's, and a second
run finds the first one's answers in the cache file (the simulator's own request count says
what was sent)."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "llmbatch_pd"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_demo_says_what_answers_and_reuses_its_cache(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(LLMBATCH_PD_CACHE=str(tmp_path / "demo.sqlite"),
               LLMBATCH_PD_DEMO_PORT=str(free_port()), PYTHONPATH=str(ROOT))
    first = demo(env)
    assert "loopback simulator" in first and "placeholder" in first
    sent = int(re.search(r"simulator saw (\d+) requests", first).group(1))
    assert sent >= 297  # 300 reviews, 3 with no text; retries of injected faults come on top
    assert "The same call again: 297 answers from the cache, 0 requests sent" in first
    second = demo(env)
    assert "simulator saw 0 requests" in second
    assert "297 of 300 answers came from the cache file" in second
    assert "sk-demo-simulator" not in first + second
