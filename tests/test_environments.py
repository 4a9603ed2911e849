"""The same calls work in a plain script, in IPython and in a Jupyter kernel, on each Python.

Every check runs in a real child process (a script, the ``ipython`` REPL fed on stdin, an
ipykernel driven by nbclient or jupyter_client) talking over real HTTP to a loopback
Simulator. Nothing is mocked. A child reports back with one ``RESULT {json}`` line (the
script: its last line) that the test reads.

- results: ``apply`` and ``aapply`` (``asyncio.run``, IPython autoawait, a kernel's top-level
  await) and ``apply`` called while an event loop is running (a kernel cell, an async
  IPython cell, a coroutine) give the same answers on the original index;
- interrupts: Ctrl+C (SIGINT) in a script and in IPython, and a kernel interrupt, end a
  ~20 s run with RunInterrupted while the provider answers nothing (the simulator is held
  still from just before the signal until the run has ended), keep the finished rows in
  ``last_result()`` (the rest say "interrupted: ..." or "not sent: the run was interrupted first"), and no request is sent afterwards: the
  simulator's log shows no more of the run's requests after the signal than it can have open
  at once. How many seconds the interrupt takes is measured by benchmarks/responsiveness.py.

Interpreters: the one running the tests (the ``.venv`` of ``make test``) always. Each other
supported Python (3.11 to 3.13) found on this machine, on PATH or under pyenv, gets a venv at
``.venv-py3.X/`` in the repository root, built on first use (~1 minute each from the package
mirror), reused while pyproject.toml is unchanged (a stamp file records its digest), and runs
the same tests; those are marked ``slow`` and skipped, with the reason, when the interpreter
is missing. ``LLMBATCH_TEST_PYTHONS=0`` turns them off; ``LLMBATCH_TEST_PYTHONS=3.12,3.13``
picks versions and makes a missing one an error rather than a skip.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import paused, wait_until

ROOT = Path(__file__).resolve().parents[1]
ENVS = Path(__file__).resolve().parent / "envs"
SUPPORTED = ("3.11", "3.12", "3.13")
HERE = "{}.{}".format(*sys.version_info[:2])
VENV_PACKAGES = ("ipykernel", "nbclient", "ipython")
KEY = "sk-test-envcheck-0123456789"
MODEL = "openai/gpt-4.1-mini"
TEMPLATE = "Classify the sentiment of this review as positive, negative or neutral:\n{text}"

# Interrupt tests: a run of 2,000 distinct rows at 200 ms a request, CONCURRENCY at a time
# (~20 s if nothing stops it), against a simulator in this process, is interrupted once the
# simulator has answered INTERRUPT_AFTER_ANSWERS requests (~0.6 s of sending; waiting on
# answers, not on the clock, keeps a loaded machine from interrupting before anything
# finished). The requests after the run (to show the engine still works) go to PROBE_MODEL,
# so the simulator's log tells them from the run's.
INTERRUPT_AFTER_ANSWERS = 60
CONCURRENCY = 20
RUN_MODEL, PROBE_MODEL = "gpt-4.1-mini", "gpt-4.1-nano"


# -- interpreters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Interp:
    python: Path  # a venv's python with llmbatch_pd and the Jupyter packages installed
    version: str

    @property
    def ipython(self) -> Path:
        return self.python.parent / "ipython"


def _wanted_versions() -> tuple[list[str], bool]:
    """(other versions to test, whether a missing one is an error)."""
    raw = os.environ.get("LLMBATCH_TEST_PYTHONS", "").strip()
    if raw in ("0", "no", "off", "false"):
        return [], False
    if raw in ("", "1", "auto", "all"):
        return [v for v in SUPPORTED if v != HERE], False
    return [v.strip() for v in raw.split(",") if v.strip() and v.strip() != HERE], True


def _patch_level(path: str) -> int:
    patch = Path(path).parent.parent.name.split(".")[2]
    return int(patch) if patch.isdigit() else -1


def find_interpreter(version: str) -> str | None:
    """A working ``python3.X`` with venv support: on PATH, else under pyenv's versions.

    pyenv puts shims for every installed version on PATH that fail unless that version is
    selected, so each candidate is run, not just found.
    """
    candidates = []
    if found := shutil.which(f"python{version}"):
        candidates.append(found)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    installed = glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}")
    candidates += sorted(installed, key=_patch_level, reverse=True)  # the newest patch first
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    for candidate in candidates:
        try:
            out = subprocess.run([candidate, "-c", probe], capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    return None


def _run(cmd: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                         **kw)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        raise AssertionError(f"{' '.join(map(str, cmd[:4]))} ... exited {out.returncode}:\n{tail}")
    return out


def ensure_venv(version: str, base: str) -> tuple[Path, dict]:
    """``.venv-py3.X/`` at the repository root, with the package installed editable.

    Reused while its stamp matches (pyproject.toml's digest, the packages, the interpreter);
    otherwise pip brings it up to date. A lock file inside it keeps two pytest runs from
    building it at once.
    """
    root = ROOT / f".venv-py{version}"
    root.mkdir(exist_ok=True)
    # ignored by git on its own, as Python 3.13's venv does it, whatever .gitignore says
    (root / ".gitignore").write_text("# created by tests/test_environments.py\n*\n")
    python, stamp_file = root / "bin" / "python", root / ".llmbatch-stamp"
    base_version = _run([base, "-c", "import sys; print(sys.version)"], 30).stdout.strip()
    want = {
        "pyproject_sha256": hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest(),
        "packages": list(VENV_PACKAGES),
        "base": base,
        "base_version": base_version,
    }
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            have = json.loads(stamp_file.read_text())
        except (OSError, ValueError):
            have = {}
        if {k: have.get(k) for k in want} == want and python.exists():
            return python, have
        timings = {}
        try:
            ok = python.exists() and subprocess.run(
                [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                timeout=30).stdout.strip() == base_version
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if not ok:  # missing or built from another interpreter: start again
            for entry in root.iterdir():
                if entry.name not in (".lock", ".gitignore"):
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            started = time.monotonic()
            _run([base, "-m", "venv", root], 300)
            timings["venv_seconds"] = round(time.monotonic() - started, 1)
        stamp_file.unlink(missing_ok=True)
        started = time.monotonic()
        _run([python, "-m", "pip", "install", "--quiet", "-e", ROOT, *VENV_PACKAGES], 900,
             cwd=ROOT)
        timings["pip_seconds"] = round(time.monotonic() - started, 1)
        stamp = {**want, **timings, "built": time.strftime("%Y-%m-%d %H:%M:%S")}
        stamp_file.write_text(json.dumps(stamp, indent=1))
        return python, stamp


def _interp_params():
    others, _ = _wanted_versions()
    params = [pytest.param(HERE, id="venv")]
    params += [pytest.param(v, id=f"py{v}", marks=pytest.mark.slow) for v in others]
    return params


@pytest.fixture(scope="session", params=_interp_params())
def interp(request) -> Interp:
    version = request.param
    if version == HERE:
        return Interp(Path(sys.executable), version)
    _, required = _wanted_versions()
    base = find_interpreter(version)
    if base is None:
        reason = (f"no working python{version} with venv support on PATH or under pyenv; "
                  "install one to test this supported version")
        if required:
            pytest.fail(f"LLMBATCH_TEST_PYTHONS asks for {version}: {reason}")
        pytest.skip(reason)
    python, _ = ensure_venv(version, base)  # its stamp file records how long the build took
    return Interp(python, version)


@pytest.fixture(scope="session")
def kernelspec(interp, tmp_path_factory) -> tuple[Path, str]:
    """A kernelspec for this interpreter, installed by its own ipykernel into a temp prefix
    (so the kernel is that venv's python, not whatever ``python3`` spec the machine has)."""
    prefix = tmp_path_factory.mktemp(f"kernel-{interp.version}")
    name = f"llmbatch-envtest-{interp.version.replace('.', '')}"
    _run([interp.python, "-m", "ipykernel", "install", "--prefix", prefix, "--name", name], 60)
    kernels = prefix / "share" / "jupyter" / "kernels"
    spec = json.loads((kernels / name / "kernel.json").read_text())
    assert Path(spec["argv"][0]) == interp.python, spec["argv"]
    return kernels, name


@pytest.fixture
def env(tmp_path) -> dict:
    """The child's environment: a cache file of its own (nothing from earlier runs is
    answered from the cache), a throwaway IPython profile directory, no user site, no key
    or endpoint from the caller's environment."""
    e = dict(os.environ)
    e.update({
        "LLMBATCH_PD_CACHE": str(tmp_path / "cache.sqlite"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "TERM": "dumb",
        "NO_COLOR": "1",
    })
    e["PYTHONPATH"] = str(ROOT)  # this checkout's llmbatch_pd, whatever a venv points to
    e.pop("VIRTUAL_ENV", None)
    for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        e.pop(k, None)
    return e


def result_line(text: str) -> dict:
    for line in reversed(text.splitlines()):
        at = line.find("RESULT {")  # a REPL prints its prompt on the same line
        if at >= 0:
            return json.loads(line[at + len("RESULT "):])
    raise AssertionError(f"no RESULT line in the output:\n{text[-3000:]}")


class Deadline:
    """Call ``on_timeout`` (which must unblock the waiting call, e.g. kill the child) if the
    block takes longer than ``seconds``, then fail with ``message``."""

    def __init__(self, seconds: float, message: str, on_timeout) -> None:
        self._timer = threading.Timer(seconds, self._expire, (on_timeout,))
        self.seconds, self.message, self.expired = seconds, message, False

    def _expire(self, on_timeout) -> None:
        self.expired = True
        on_timeout()

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        if self.expired:
            raise AssertionError(f"{self.message} within {self.seconds:g} s")


def check_labels(summary: dict, rows: int) -> None:
    assert summary["rows"] == rows and summary["answered"] == rows, summary
    assert summary["errors"] == 0 and summary["labels_ok"] and summary["index_ok"], summary


@pytest.fixture
def slow_sim():
    """The provider for the interrupt tests, here in the test process so the test can watch
    the requests arrive."""
    from llmbatch_pd.sim import Simulator

    with Simulator(ttft_ms=200, api_key=KEY) as sim:
        yield sim


def ended(sim, model: str, status: int | None = None) -> int:
    """Requests for ``model`` the simulator has finished (with ``status``, if given)."""
    return sum(1 for e in list(sim.log)
               if e["model"] == model and (status is None or e["status"] == status))


def wait_for_answers(sim, still_running, n: int = INTERRUPT_AFTER_ANSWERS) -> None:
    wait_until(lambda: sim.stats()["by_status"].get("200", 0) >= n or not still_running(), 60,
               f"the simulator to answer {n} of the run's requests")
    assert still_running(), "the run ended (or failed) before it could be interrupted"


@dataclass(frozen=True)
class AtSignal:
    """The run's requests the simulator had finished, and answered, when the signal went:
    read while it is held still, so none can finish and no new one can start meanwhile."""
    ended: int
    answered: int

    @classmethod
    def read(cls, sim) -> AtSignal:
        return cls(ended(sim, RUN_MODEL), ended(sim, RUN_MODEL, 200))


def check_stopped(sim, at: AtSignal, kept_answered: int, probes: int, others: int = 0) -> None:
    """The run sent nothing after the signal, and kept what it had been answered.

    With the simulator held still, the run can have no more than CONCURRENCY requests open
    when the signal arrives (in flight at the simulator, or still in its socket); those end
    there after it. A run that went on would add more. Every answer the simulator had given
    reached the run, except those open requests' at most (``others``: answers to the same
    model that were not the interrupted run's)."""
    wait_until(lambda: sim.stats()["in_flight"] == 0, 30,
               "the requests open at the interrupt to end at the simulator")
    after = ended(sim, RUN_MODEL) - at.ended
    assert after <= CONCURRENCY, (
        f"the run goes on after the interrupt: {after} of its requests ended at the simulator "
        f"after the signal, more than the {CONCURRENCY} it can have open")
    assert ended(sim, PROBE_MODEL) == probes, "the requests sent after the run to check it"
    assert at.answered - others - CONCURRENCY <= kept_answered <= ended(sim, RUN_MODEL, 200), (
        f"{kept_answered} rows kept, {at.answered} answered when the signal went")


# -- 1. plain script -------------------------------------------------------------------------


def test_plain_script(interp, env, tmp_path):
    out = _run([interp.python, ENVS / "script_check.py", "run"], 120, env=env, cwd=tmp_path)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["python"] == list(map(int, interp.version.split(".")))
    assert Path(r["executable"]) == interp.python
    assert Path(r["package"]).is_relative_to(ROOT), r["package"]
    for part in ("sync", "async", "nested"):
        check_labels(r[part], 30)
    # sync/async parity, and deterministic answers: the three calls agree row by row
    assert r["sync"]["answers"] == r["async"]["answers"] == r["nested"]["answers"]
    assert r["loop_was_running"] is True  # apply() was called from inside a running loop
    assert r["requests"] >= 30  # real HTTP reached the simulator
    assert "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("mode", [
    "sync",
    "async",
    "gather",  # two awaited runs at once share one SIGINT hook
])
def test_plain_script_ctrl_c_keeps_finished_rows(interp, env, tmp_path, slow_sim, mode):
    """SIGINT (what Ctrl+C sends) during a 2,000-row run of ~20 s stops it within seconds
    with RunInterrupted, and the rows that finished are kept in last_result()."""
    proc = subprocess.Popen(
        [str(interp.python), str(ENVS / "script_check.py"), "interrupt", mode, slow_sim.base_url,
         str(CONCURRENCY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        wait_for_answers(slow_sim, lambda: proc.poll() is None)
        with paused(slow_sim):  # the provider answers nothing: the run must end anyway
            at = AtSignal.read(slow_sim)
            proc.send_signal(signal.SIGINT)
            with Deadline(30, "SIGINT did not end the run (the simulator held still)", proc.kill):
                line = proc.stdout.readline()
        assert line.strip() == "interrupted", line
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    r = json.loads(stdout.strip().splitlines()[-1])
    # llmbatch_pd.RunInterrupted, a KeyboardInterrupt, from apply() and from aapply() alike
    assert r["is_run_interrupted"], r
    assert "rows had finished and are kept" in r["message"]
    assert r["result_attr_rows"] == 2000
    assert r["rows"] == 2000 and r["interrupted_flag"], r
    assert 0 < r["answered"] < 2000, r
    assert r["answered"] + r["cancelled"] == 2000 and not r["other_errors"], r
    assert r["probe_ok"], r  # the engine still works after the interrupt
    # gather: the short run's 5 answers are in the log too
    check_stopped(slow_sim, at, r["answered"], probes=1, others=5 if mode == "gather" else 0)


# -- 2. IPython ------------------------------------------------------------------------------

# Typed into the IPython REPL line by line, one statement per input, as a person would.
IPYTHON_SESSION = f"""\
import asyncio, json, sys
import pandas as pd
import llmbatch_pd
from llmbatch_pd.sim import Simulator
sim = Simulator(ttft_ms=5, api_key={KEY!r}).start()
opts = dict(model={MODEL!r}, base_url=sim.base_url, api_key={KEY!r}, progress=False)
df = pd.DataFrame({{"text": [f"review {{i}}: {{'great' if i % 3 else 'awful'}}" for i in range(25)]}})
out = df.llm.apply({TEMPLATE!r}, **opts)
out2 = await df.llm.aapply({TEMPLATE!r}, **opts)
await asyncio.sleep(0); loop_running = asyncio.get_running_loop() is not None; out3 = df.llm.apply({TEMPLATE!r}, **opts)
out4 = await df.llm.aapply({TEMPLATE!r}, **opts)
summ = lambda o: dict(rows=len(o), answered=int(o["llm_output"].notna().sum()), errors=int(o["llm_output_error"].notna().sum()), labels=sorted(set(o["llm_output"].dropna())))
same = all(o["llm_output"].tolist() == out["llm_output"].tolist() for o in (out2, out3, out4))
print("RESULT " + json.dumps(dict(executable=sys.executable, python=list(sys.version_info[:2]), outs=[summ(o) for o in (out, out2, out3, out4)], same=same, loop_running=loop_running, requests=len(sim.log))))
sim.stop()
"""


def test_ipython(interp, env, tmp_path):
    """The ``ipython`` REPL: a sync apply, a top-level ``await aapply`` (autoawait), a sync
    apply inside an async cell (loop running), and another top-level await after it."""
    out = subprocess.run(
        [str(interp.ipython), "--simple-prompt", "--no-banner", "--colors=NoColor",
         "--HistoryManager.hist_file=:memory:"],
        input=IPYTHON_SESSION, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Traceback" not in text and "Error" not in text, text
    r = result_line(out.stdout)
    assert Path(r["executable"]) == interp.python
    assert r["python"] == list(map(int, interp.version.split(".")))
    for summary in r["outs"]:
        assert summary["rows"] == summary["answered"] == 25 and summary["errors"] == 0, r
        assert set(summary["labels"]) <= {"positive", "negative", "neutral"}, r
    assert r["same"] and r["loop_running"] and r["requests"] >= 25, r


# -- 3. Jupyter kernel -----------------------------------------------------------------------

NOTEBOOK_CELLS = [
    """\
import asyncio, json, sys
import pandas as pd
import llmbatch_pd
from llmbatch_pd.sim import Simulator
print("RESULT " + json.dumps(dict(executable=sys.executable, python=list(sys.version_info[:2]))))""",
    f"""\
sim = Simulator(ttft_ms=5, api_key={KEY!r}).start()
opts = dict(model={MODEL!r}, base_url=sim.base_url, api_key={KEY!r}, progress=False)
df = pd.DataFrame(
    {{"text": [f"review {{i}}: {{'great' if i % 3 else 'awful'}}" for i in range(40)]}},
    index=pd.Index([f"r{{i}}" for i in range(40)], name="rid"),
)""",
    f"""\
# a plain (sync) call while the kernel's own event loop is running
try:
    asyncio.get_running_loop()
    loop_running = True
except RuntimeError:
    loop_running = False
out = df.llm.apply({TEMPLATE!r}, output="sentiment", **opts)""",
    f"out2 = await df.llm.aapply({TEMPLATE!r}, output='sentiment', **opts)",
    "out.head(3)",
    """\
summ = lambda o: dict(rows=len(o), answered=int(o["sentiment"].notna().sum()),
                      errors=int(o["sentiment_error"].notna().sum()),
                      labels=sorted(set(o["sentiment"].dropna())),
                      index_ok=list(o.index) == list(df.index))
assert out["sentiment"].tolist() == out2["sentiment"].tolist()
print("RESULT " + json.dumps(dict(loop_running=loop_running, outs=[summ(out), summ(out2)],
                                  requests=len(sim.log))))""",
    "sim.stop()",
]


def _kernel_manager(kernelspec, cls):
    from jupyter_client.kernelspec import KernelSpecManager

    kernels, name = kernelspec
    return cls(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))


def _stream_text(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def test_jupyter_kernel_notebook(interp, kernelspec, env, tmp_path):
    """A notebook run by nbclient: sync apply while the kernel's loop runs, then a top-level
    ``await aapply``; no cell errors, the counts and labels are right."""
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
    km = _kernel_manager(kernelspec, AsyncKernelManager)
    client = NotebookClient(nb, km=km, timeout=90, startup_timeout=60,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the traceback, if a cell fails
    nbformat.validate(nb)

    errors = [o for c in nb.cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    stderr = "".join(o.get("text", "") for c in nb.cells for o in c.outputs
                     if o.get("name") == "stderr")
    assert "Traceback" not in stderr, stderr

    head = result_line(_stream_text(nb.cells[0].outputs))
    assert Path(head["executable"]) == interp.python  # the kernel is the venv's python
    assert head["python"] == list(map(int, interp.version.split(".")))

    shown = [o for o in nb.cells[4].outputs if o.get("output_type") == "execute_result"]
    assert shown and "sentiment_error" in shown[0]["data"]["text/html"]

    r = result_line(_stream_text(nb.cells[5].outputs))
    assert r["loop_running"] is True, r  # the cell really ran inside a running event loop
    for summary in r["outs"]:
        assert summary["rows"] == summary["answered"] == 40 and summary["errors"] == 0, r
        assert summary["index_ok"] and set(summary["labels"]) <= {"positive", "negative", "neutral"}
    assert r["requests"] >= 40, r


# -- interrupts in IPython and in a kernel -------------------------------------------------
#
# The same session text serves the IPython REPL (one statement per line, a blank line ends
# the def) and kernel cells. The simulator is the test's (slow_sim), so the test sees the
# requests arrive and can tell whether any arrive after the interrupt.


def interrupt_setup(base_url: str) -> str:
    return f"""\
import asyncio, json, signal, sys, time
import pandas as pd
import llmbatch_pd
opts = dict(model={MODEL!r}, base_url={base_url!r}, api_key={KEY!r}, progress=False, concurrency={CONCURRENCY})
probe_opts = {{**opts, "model": "openai/{PROBE_MODEL}", "concurrency": 2}}
big = pd.DataFrame({{"text": [f"row {{i}}" for i in range(2000)]}})
def report(res, rep, last, probe):
    d = dict(last_error=type(last).__name__, last_is_kbi=isinstance(last, KeyboardInterrupt), last_result_rows=None if getattr(last, "result", None) is None else len(last.result), rows=None, answered=None)
    if res is not None:
        err, unfinished = res["llm_output_error"], res["llm_output"].isna()
        d.update(rows=len(res), answered=int((~unfinished).sum()), unfinished=int(unfinished.sum()), unfinished_cancelled=bool(err[unfinished].str.startswith(("interrupted:", "not sent: the run was interrupted")).all()), finished_clean=bool(err[~unfinished].isna().all()), interrupted=bool(rep.interrupted))
    again = pd.DataFrame({{"text": ["after the interrupt"]}}).llm.apply("Echo {{text}}", **probe_opts)
    d["again_ok"] = bool(again["llm_output"].notna().all()) and bool(probe["llm_output"].notna().all())
    print("RESULT " + json.dumps(d), flush=True)

"""


RUN_CALL = {
    "sync": 'big.llm.apply("Echo {text}", **opts)',
    "await": 'await big.llm.aapply("Echo {text}", **opts)',
}

# After the interrupted cell: what it left (read first: the runs below replace it), then a
# top-level await of a one-row run (a run left suspended on the REPL's or the kernel's loop
# would go on during it, as it would in the user's next async cell), then the report (which
# sends one more request, to show the sync engine still works).
INTERRUPT_CHECK = """\
print("CHECKPOINT", flush=True); kept, kept_report, last = llmbatch_pd.last_result(), llmbatch_pd.last_report(), getattr(sys, "last_value", None)
probe = await pd.DataFrame({"text": ["awaited after the interrupt"]}).llm.aapply("Echo {text}", **probe_opts)
report(kept, kept_report, last, probe)
"""


def check_interrupt_result(r: dict, sim, at: AtSignal) -> None:
    assert r["rows"] == 2000, f"last_result() lost the interrupted run: {r}"
    assert 0 < r["answered"] < 2000, r
    assert r["answered"] + r["unfinished"] == 2000, r
    assert r["unfinished_cancelled"] and r["finished_clean"] and r["interrupted"], r
    assert r["last_error"] == "RunInterrupted" and r["last_is_kbi"], r  # sys.last_value
    assert r["last_result_rows"] == 2000, r
    assert r["again_ok"], r  # the engine still works after an interrupt
    check_stopped(sim, at, r["answered"], probes=2)  # the check's own two requests only


@pytest.mark.parametrize("mode", ["sync", "await"])
def test_ipython_ctrl_c_keeps_finished_rows(interp, env, tmp_path, slow_sim, mode):
    """Ctrl+C (SIGINT) in the ``ipython`` REPL during a long run. For a top-level
    ``await aapply`` this used to escape IPython's run_until_complete and leave the run
    suspended, resuming at the next await cell; the check after it guards that."""
    proc = subprocess.Popen(
        [str(interp.ipython), "--simple-prompt", "--no-banner", "--colors=NoColor",
         "--HistoryManager.hist_file=:memory:"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, cwd=tmp_path,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # as in script_check.py: a child of CI may inherit SIGINT as ignored
        proc.stdin.write("import signal; signal.getsignal(signal.SIGINT) is signal.SIG_IGN and "
                         "signal.signal(signal.SIGINT, signal.default_int_handler)\n")
        proc.stdin.write(interrupt_setup(slow_sim.base_url))
        proc.stdin.write(f"{RUN_CALL[mode]}\n")
        proc.stdin.flush()
        wait_for_answers(slow_sim, lambda: proc.poll() is None)
        seen = ""
        with paused(slow_sim):  # the provider answers nothing: the run must end anyway
            at = AtSignal.read(slow_sim)
            proc.send_signal(signal.SIGINT)
            proc.stdin.write(INTERRUPT_CHECK)
            proc.stdin.close()
            with Deadline(30, "Ctrl+C did not end the run (the simulator held still)", proc.kill):
                while "CHECKPOINT" not in seen:  # the next input runs: the run has ended
                    line = proc.stdout.readline()
                    assert line, f"ipython ended early:\n{seen}"
                    seen += line
        with Deadline(60, "ipython did not finish the check", proc.kill):
            rest = proc.stdout.read()
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = seen + rest
    assert proc.returncode == 0, text
    assert "RunInterrupted: interrupted:" in text and "rows had finished and are kept" in text
    check_interrupt_result(result_line(text), slow_sim, at)


def next_message(get, wanted, timeout: float, what: str) -> dict:
    """The first message from ``get`` (a client's get_shell_msg or get_iopub_msg) for which
    ``wanted`` is true, within ``timeout`` seconds overall, however many others come first."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            msg = get(timeout=max(left, 0.01))
        except queue.Empty:
            msg = None
        if msg is not None and wanted(msg):
            return msg
        if left <= 0:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _execute(kc, code: str, timeout: float = 60) -> tuple[dict, str, list]:
    """Run code in the kernel; return its reply content, its stream text and error outputs."""
    texts, errors = [], []

    def hook(msg):
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append(msg["content"])

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"], "".join(texts), errors


@pytest.mark.parametrize("mode", ["sync", "await"])
def test_jupyter_kernel_interrupt_keeps_finished_rows(interp, kernelspec, env, tmp_path,
                                                      slow_sim, mode):
    """Interrupting the kernel (jupyter_client's interrupt_kernel, what the stop button does)
    during a long run ends the cell within seconds with RunInterrupted (a sync apply and a
    top-level ``await aapply`` alike); the next cell finds the finished rows in last_result(),
    and nothing more is sent.
    """
    from jupyter_client.manager import KernelManager

    km = _kernel_manager(kernelspec, KernelManager)
    km.start_kernel(env=env, cwd=str(tmp_path),
                    extra_arguments=["--HistoryManager.hist_file=:memory:"])
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply, text, errors = _execute(kc, interrupt_setup(slow_sim.base_url))
        assert reply["status"] == "ok", (reply, text, errors)

        # stop_on_error=False: otherwise ipykernel may abort the next request (the check)
        # when it arrives right after this cell's error
        msg_id = kc.execute(RUN_CALL[mode], stop_on_error=False)
        wait_for_answers(slow_sim, lambda: not kc.shell_channel.msg_ready())

        def of_the_cell(msg: dict) -> bool:
            return msg["parent_header"].get("msg_id") == msg_id

        with paused(slow_sim):  # the provider answers nothing: the run must end anyway
            at = AtSignal.read(slow_sim)
            km.interrupt_kernel()
            msg = next_message(kc.get_shell_msg, of_the_cell, 30,
                               "the interrupted cell's reply (the simulator held still)")
        content = msg["content"]
        assert content["status"] == "error", content
        assert content["ename"] == "RunInterrupted", content
        assert "rows had finished and are kept" in content["evalue"], content
        next_message(kc.get_iopub_msg, lambda m: of_the_cell(m) and m["msg_type"] == "status"
                     and m["content"]["execution_state"] == "idle", 30,
                     "the interrupted cell to be completely done")

        reply, text, errors = _execute(kc, INTERRUPT_CHECK)
        assert reply["status"] == "ok" and not errors, (reply, text, errors)
        check_interrupt_result(result_line(text), slow_sim, at)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
