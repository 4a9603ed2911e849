"""The IPython extension in a real (in-process) IPython shell: ``%load_ext llmbatch_pd``, then
``%%llm`` runs against the loopback simulator and ``%llm_runs`` lists what ran. Every answer is
checked against the simulator's own deterministic answer for the prompt it received, and every
dollar against a bill computed by hand from its request log (``conftest.bill``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmbatch_pd.core import journal
from llmbatch_pd.sim.answers import make_answer, prompt_sha

from ..conftest import KEY, MODEL, bill, wait_until

IPython = pytest.importorskip("IPython")
from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "Classify the sentiment of this review as positive, negative or neutral.\nReview: {text}"
TEXTS = [f"review number {i}: {'great' if i % 3 else 'awful'} service" for i in range(12)]


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "llmbatch_pd")
    yield sh
    InteractiveShell.clear_instance()


@pytest.fixture
def ns(shell, sim):
    """A namespace with a frame, ``reviews``, and the simulator's endpoint, ``ep``."""
    journal.clear()
    shell.user_ns["reviews"] = pd.DataFrame({"text": TEXTS, "stars": range(12)})
    shell.user_ns["ep"] = {"base_url": sim.base_url, "api_key": KEY}
    return shell.user_ns


def cell(shell, line: str, body: str = TEMPLATE):
    """Run ``%%llm line`` with ``body`` as a cell; the cell's value, or raise what it raised."""
    result = shell.run_cell(f"%%llm {line}\n{body}\n", store_history=True)
    if result.error_before_exec or result.error_in_exec:
        raise result.error_before_exec or result.error_in_exec
    return result.result


def expected_labels(texts, model: str = "gpt-4.1-mini") -> list[str]:
    """The simulator's answer to each row's prompt (its options, chosen deterministically)."""
    return [make_answer([{"role": "user", "content": TEMPLATE.format(text=t)}], model).text for t in texts]


def test_llm_cell_answers_every_row_and_keeps_the_frame(shell, ns, sim):
    before = ns["reviews"].copy()
    out = cell(shell, f"reviews --model {MODEL} --output label --budget 0.5 --out res --options ep --progress off")
    assert out is ns["res"] and shell.user_ns["_"] is out  # returned (shown, and _) and kept as res
    assert list(out["label"]) == expected_labels(TEXTS)
    assert out["label_error"].isna().all()
    assert {e["prompt_sha"] for e in sim.log} == {
        prompt_sha([{"role": "user", "content": TEMPLATE.format(text=t)}]) for t in TEXTS}
    pd.testing.assert_frame_equal(ns["reviews"], before)  # the input frame is never changed
    assert "label" not in ns["reviews"].columns
    assert out.llm.report.budget == 0.5


def test_llm_runs_lists_the_run_with_its_rows_and_dollars(shell, ns, sim):
    cell(shell, f"reviews --model {MODEL} --output label --options ep --progress off")
    table = shell.run_line_magic("llm_runs", "")
    [entry] = table.entries
    paid = bill(sim.log)
    assert (entry.model, entry.kind, entry.rows, entry.answered, entry.failed, entry.status) == (
        MODEL, "run", 12, 12, 0, "done")
    assert entry.dollars == pytest.approx(paid, rel=1e-9) and paid > 0
    text, html = repr(table), table._repr_html_()
    assert MODEL in text and "done" in text and "Total spend in this kernel" in text
    assert MODEL in html and "<table" in html and ">12<" in html
    assert journal.total_spend() == pytest.approx(paid, rel=1e-9)
    assert shell.run_line_magic("llm_runs", "--clear") is None
    assert repr(shell.run_line_magic("llm_runs", "")) == "No runs in this kernel yet."


def test_several_models_side_by_side(shell, ns, sim):
    out = cell(shell, "reviews --model openai/gpt-4.1-mini,openai/gpt-4.1-nano --output label --options ep "
                      "--progress off")
    assert list(out["label_gpt-4.1-mini"]) == expected_labels(TEXTS, "gpt-4.1-mini")
    assert list(out["label_gpt-4.1-nano"]) == expected_labels(TEXTS, "gpt-4.1-nano")
    entries = {e.model: e for e in journal.entries()}
    assert set(entries) == {"openai/gpt-4.1-mini", "openai/gpt-4.1-nano"}
    for model, entry in entries.items():
        short = model.split("/")[1]
        assert entry.answered == 12
        assert entry.dollars == pytest.approx(bill(e for e in sim.log if e["model"] == short), rel=1e-9)
    # the same, with the flag repeated
    again = cell(shell, "reviews -m openai/gpt-4.1-mini -m openai/gpt-4.1-nano --output label --options ep "
                        "--progress off")
    assert list(again.columns) == list(out.columns)


def test_estimate_sends_nothing(shell, ns, sim):
    est = cell(shell, f"reviews --model {MODEL} --budget 0.5 --options ep --estimate")
    assert sim.log == []
    assert list(est.index) == [MODEL] and est.loc[MODEL, "requests"] == 12
    assert bool(est.loc[MODEL, "within_budget"]) is True
    assert journal.entries() == []


def test_submit_runs_in_the_background(shell, ns, sim):
    job = cell(shell, f"reviews --model {MODEL} --output label --options ep --progress off --submit --out job")
    assert ns["job"] is job and type(job).__name__ == "Job"
    wait_until(job.done, 60, "the background job to finish")
    [entry] = journal.entries()
    assert entry.kind == "job"
    out = job.result(timeout=30)
    assert list(out["label"]) == expected_labels(TEXTS)
    [entry] = journal.entries()  # reading the result leaves one entry: the job's
    assert (entry.kind, entry.status, entry.answered) == ("job", "done", 12)
    assert entry.dollars == pytest.approx(bill(sim.log), rel=1e-9)


def test_confirm_waits_for_start_and_the_journal_says_so(shell, ns, sim):
    job = cell(shell, f"reviews --model {MODEL} --options ep --progress off --submit --confirm")
    [entry] = journal.entries()
    assert entry.status == "waiting to start" and sim.log == []
    job.cancel()
    wait_until(lambda: journal.entries()[0].status == "cancelled", 30, "the job's entry to say cancelled")
    assert sim.log == []


@pytest.mark.parametrize(("line", "body", "says"), [
    (f"--model {MODEL} --options ep", TEMPLATE, "name the frame"),
    (f"nothing_here --model {MODEL} --options ep", TEMPLATE, "no frame 'nothing_here'"),
    (f"ep --model {MODEL} --options ep", TEMPLATE, "not a pandas DataFrame"),
    ("reviews --options ep", TEMPLATE, "name a model"),
    (f"reviews --model {MODEL} --options ep", "", "the template, and it is empty"),
    (f"reviews --model {MODEL} --options ep --budget lots", TEMPLATE, "--budget"),
    (f"reviews --model {MODEL} --options ep --bogus", TEMPLATE, "unrecognized arguments: --bogus"),
    (f"reviews --model {MODEL} --options ep", "Classify {txet}", "txet"),
    (f"reviews --model {MODEL} --options ep --concurrency 0", TEMPLATE, "concurrency"),
    (f"reviews --model {MODEL} --options ep --estimate --submit", TEMPLATE, "exclude each other"),
    (f"reviews --model {MODEL} --options nope", TEMPLATE, "no variable 'nope'"),
    (f"reviews --model {MODEL} --options ep --out 1x", TEMPLATE, "--out takes a variable name"),
    (f"reviews --model {MODEL} --options ep --pack some", TEMPLATE, "--pack"),
])
def test_bad_input_is_a_usage_error_before_anything_is_sent(shell, ns, sim, line, body, says):
    with pytest.raises(UsageError) as caught:
        cell(shell, line, body)
    assert says in str(caught.value)
    assert sim.log == [] and journal.entries() == []
    assert KEY not in str(caught.value)


def test_a_budget_the_estimate_exceeds_raises_the_budget_error(shell, ns, sim):
    from llmbatch_pd import BudgetError

    with pytest.raises(BudgetError):
        cell(shell, f"reviews --model {MODEL} --options ep --budget 0.0000001 --progress off")
    assert sim.log == []


def test_help_lists_the_flags(shell, capsys):
    shell.run_cell("%%llm --help\nx\n")
    shown = capsys.readouterr().out
    for flag in ("%%llm [", "--model", "--output", "--budget", "--pack", "--tier", "--mode", "--out",
                 "--estimate", "--submit"):
        assert flag in shown, flag
    assert shown.strip() in shell.find_cell_magic("llm").__doc__  # what %%llm? shows


def test_loads_from_the_ipython_config(tmp_path, sim):
    """``c.InteractiveShellApp.extensions = ["llmbatch_pd"]`` in a profile: a fresh IPython has
    the magics without %load_ext."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text('c.InteractiveShellApp.extensions = ["llmbatch_pd"]\n')
    check = tmp_path / "check.ipy"  # one cell: the cell magic is called by its registered name
    check.write_text(
        "import pandas as pd\n"
        "df = pd.DataFrame({'text': ['good', 'bad']})\n"
        f"res = get_ipython().run_cell_magic('llm', 'df --model {MODEL} --output label --progress off', "
        "'Classify as positive or negative: {text}')\n"
        "print('LABELS', list(res['label']))\n"
        "print(repr(get_ipython().run_line_magic('llm_runs', '')))\n")
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONPATH": str(ROOT),
           "OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": KEY}
    done = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", str(check)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    want = [make_answer([{"role": "user", "content": f"Classify as positive or negative: {t}"}],
                        "gpt-4.1-mini").text for t in ("good", "bad")]
    assert f"LABELS {want}" in done.stdout, done.stdout + done.stderr
    assert "Total spend in this kernel" in done.stdout and KEY not in done.stdout + done.stderr


def test_a_runs_warning_is_the_cells_and_said_once(shell, ns, sim):
    ns["holes"] = pd.DataFrame({"text": ["fine", None, "good"]})
    with pytest.warns(UserWarning, match="1 of 3 rows have no answer") as said:
        out = cell(shell, f"holes --model {MODEL} --output label --options ep --progress off")
    mine = [w for w in said if "have no answer" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == "%%llm"  # not a line of the library
    assert out["label"].isna().tolist() == [False, True, False] and len(sim.log) == 2
    [entry] = journal.entries()
    assert (entry.answered, entry.failed, entry.skipped, entry.not_sent) == (2, 0, 1, 0)


def test_column_names_complete_inside_a_field_of_the_cell(shell, ns):
    from IPython.core.completer import provisionalcompleter

    def complete(code: str) -> list[str]:
        with provisionalcompleter():
            return [c.text for c in shell.Completer.completions(code, len(code)) if c.type == "column"]

    assert complete(f"%%llm reviews --model {MODEL}\nClassify {{te") == ["text"]
    assert complete(f"%%llm reviews --model {MODEL}\nStars: {{st") == ["stars"]
    assert complete(f"%%llm reviews --model {MODEL}\nClassify {{text}} te") == []  # not in a field
    assert complete("x = {te") == []  # not a %%llm cell
