"""The API key never shows: not in reprs, logs, exceptions, the cache file or a notebook."""

import logging
import pickle

import pandas as pd
import pytest

import llmbatch_pd
from llmbatch_pd.core.secrets import Secret
from llmbatch_pd.providers.registry import make_provider, parse_model
from llmbatch_pd.sim import Simulator

SECRET = "sk-live-TOPSECRET-4242424242424242"


def test_secret_repr_str_and_pickle():
    s = Secret(SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s) and SECRET not in f"{s}"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert s.scrub(f"bad key {SECRET}!") == "bad key ***!"


def test_provider_repr_has_no_key():
    p = make_provider(parse_model("openai/gpt-4.1-mini"), base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    assert SECRET not in repr(p) and SECRET not in repr(vars(p).get("api_key"))


def test_a_credential_in_base_url_is_not_shown_in_reprs_or_batch_messages():
    """A gateway URL may carry a credential (user info or a query token): reprs and the
    batch client's messages name the host and path only."""
    from llmbatch_pd.core.secrets import safe_url

    url = "https://alice:s3cretpw@gw.example.com:8443/v1?token=tok123"
    provider = make_provider(parse_model("openai/gpt-4.1-mini"), base_url=url, api_key="k")
    assert "s3cretpw" not in repr(provider) and "tok123" not in repr(provider)
    assert "gw.example.com:8443/v1" in repr(provider)
    assert safe_url("http://[::1]:4000/v1?k=x") == "http://[::1]:4000/v1"


def test_key_absent_from_errors_logs_report_and_cache(tmp_path, caplog, private_cache):
    caplog.set_level(logging.DEBUG)
    df = pd.DataFrame({"t": [f"row {i}" for i in range(30)]})
    with Simulator(ttft_ms=5, api_key="sk-the-right-one") as sim:
        with pytest.raises(llmbatch_pd.AuthenticationError) as caught:
            df.llm.apply("{t}", model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=SECRET,
                         progress=False)
    bad = caught.value.result
    with Simulator(ttft_ms=5, api_key=SECRET, fault_5xx=0.2, seed=1) as sim:
        good = df.llm.apply("{t}", model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=SECRET,
                            progress=False, usage=True)
    texts = [str(caught.value), repr(caught.value), bad.to_csv(), good.to_csv(), repr(bad.llm.report),
             bad.llm.report.summary(),
             repr(good.llm.report), caplog.text, repr(bad.attrs), repr(good.attrs)]
    assert not [t for t in texts if SECRET in t]
    for suffix in ("", "-wal", "-shm"):
        path = f"{private_cache}{suffix}"
        try:
            data = open(path, "rb").read()
        except FileNotFoundError:
            continue
        assert SECRET.encode() not in data


def test_key_absent_from_exceptions(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    df = pd.DataFrame({"t": ["a"]})
    try:
        df.llm.apply("{nope}", model="openai/gpt-4.1-mini", api_key=SECRET, progress=False)
    except Exception as exc:  # noqa: BLE001
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    else:
        pytest.fail("expected an error")


def test_key_absent_from_executed_and_exported_notebook(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os, pandas as pd, llmbatch_pd\n"
                                  "from llmbatch_pd.sim import Simulator"),
        nbformat.v4.new_code_cell(
            "sim = Simulator(ttft_ms=5, api_key='another-key', fault_5xx=0.1).start()\n"
            "os.environ['OPENAI_BASE_URL'] = sim.base_url\n"
            "df = pd.DataFrame({'t': ['a', 'b', 'c']})\n"
            "try:\n"
            "    out = df.llm.apply('{t}', model='openai/gpt-4.1-mini')\n"
            "except llmbatch_pd.AuthenticationError as exc:  # the wrong key stops the run\n"
            "    out = exc.result\n"
            "    print(exc)\n"
            "out"
        ),
        nbformat.v4.new_code_cell("out.llm.report"),
        nbformat.v4.new_code_cell("sim.stop()"),
    ]
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the kernel inherits it, as from a shell
    NotebookClient(nb, timeout=120, kernel_name="python3", cwd=str(tmp_path)).execute()
    saved = nbformat.writes(nb)
    assert "401" in saved  # the wrong key was really used and refused
    assert SECRET not in saved
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert SECRET not in html


def test_key_absent_from_widget_state():
    """Drive the notebook panel through a run that met a wrong key, then read every widget's
    state (what would be saved in the notebook) and the exported summary."""
    import ipywidgets as w

    from llmbatch_pd.ui.panel import Panel

    df = pd.DataFrame({"t": [f"row {i}" for i in range(10)]})
    with Simulator(ttft_ms=5, api_key="sk-the-right-one") as sim:
        with pytest.raises(llmbatch_pd.AuthenticationError) as caught:
            df.llm.apply("{t}", model="openai/gpt-4.1-mini", base_url=sim.base_url, api_key=SECRET,
                         progress=False)
    assert SECRET not in str(caught.value)
    report = caught.value.result.llm.report
    assert report.stats.errors  # the 401 message is among the errors the panel lists
    panel = Panel(report, report.estimate, budget=1.0)
    panel.update()
    states = []
    stack = [panel.widget]
    while stack:
        widget = stack.pop()
        states.append(repr(widget.get_state()))
        stack.extend(c for c in getattr(widget, "children", ()) if isinstance(c, w.Widget))
    panel.finish()
    assert states and not [s for s in states if SECRET in s]
    assert SECRET not in report._repr_html_() and SECRET not in report.to_markdown()
