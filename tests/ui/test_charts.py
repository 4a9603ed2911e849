"""The panel's pictures and figures (issue 15) on reports of real runs against the simulator
(real HTTP over loopback): each picture is parsed back out of the HTML it is part of and its
geometry is checked against figures computed here by hand, from the simulator's own log of
the tokens it returned and gpt-4.1-mini's published price, never from the library's sums."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import pytest

from llmbatch_pd.ui import charts
from llmbatch_pd.ui.estimate_view import money3, seconds, ways_html, ways_text
from llmbatch_pd.ui.panel import Panel
from llmbatch_pd.ui.refused import refused_html
from llmbatch_pd.ui.report import report_html, reports_html
from llmbatch_pd.ui.style import AMBER_TEXT, BLUE, GREEN_TEXT, RED, RED_TEXT
from tests.conftest import paused, wait_until

INPUT_PER_MTOK, OUTPUT_PER_MTOK = 0.40, 1.60  # gpt-4.1-mini (and nano below), dollars per million
NANO_IN, NANO_OUT = 0.10, 0.40


def billed(log, model: str | None = None, price=(INPUT_PER_MTOK, OUTPUT_PER_MTOK)) -> float:
    """Dollars for every answer the simulator gave, by hand from its log and the price list."""
    return sum(e["prompt_tokens"] * price[0] + e["completion_tokens"] * price[1]
               for e in log if e["status"] == 200 and (model is None or e["model"] == model)) / 1e6


def part(svg_html: str, name: str, chart: str | None = None) -> dict[str, str]:
    """The attributes of the first ``<rect data-part=name>`` (inside ``data-chart=chart``)."""
    if chart is not None:
        svg_html = re.search(rf'<svg[^>]*data-chart="{chart}".*?</svg>', svg_html, re.S).group(0)
    m = re.search(rf'<rect data-part="{name}"([^>]*)>', svg_html)
    assert m, f"no {name} in {svg_html[:400]}"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


def frame(n: int) -> pd.DataFrame:
    """Rows of one length, so every request costs the same (the projection prices the rows
    left at the recent requests' cost; here that is the cost of any of them)."""
    return pd.DataFrame({"t": [f"review number {i:03d} was fine" for i in range(n)]})


# -- the budget bar --------------------------------------------------------------------------


def test_budget_bar_of_a_finished_run_spends_what_the_simulator_billed(llm, sim):
    df = frame(30)
    expected = df.llm.estimate("Classify {t}", model=llm["model"], max_tokens=20)["cost"].iloc[0]
    budget = round(3 * expected, 6)  # the run fits; the bar is about a third full
    out = df.llm.apply("Classify {t}", max_tokens=20, budget=budget, **llm)
    bill = billed(sim.log)
    assert bill > 0
    html = report_html(out.llm.report)
    svg = re.search(r'<svg[^>]*data-chart="budget".*?</svg>', html, re.S).group(0)
    scale = float(re.search(r'data-scale="([^"]+)"', svg).group(1))
    assert scale == pytest.approx(budget)  # expected (a third) and spent are below the budget
    spent = part(svg, "spent")
    assert float(spent["data-dollars"]) == pytest.approx(bill, rel=1e-4)
    assert float(spent["width"]) == pytest.approx(bill / budget * 1000, abs=0.02)
    tick = part(svg, "expected")
    assert float(tick["x"]) + 3 == pytest.approx(expected / budget * 1000, abs=0.02)
    assert "projected" not in svg  # a finished run has nothing left to project


def test_panel_projects_a_running_run_to_all_its_rows(llm, sim):
    """Mid-run (held still: the simulator's loop is paused, so the requests in flight wait while
    the card is drawn): the projected segment runs from the dollars spent to the cost of every
    row at the cost per answered row so far (the simulator's bill / answered rows * rows)."""
    sim.configure(ttft_ms=40)
    df = frame(80)
    expected = df.llm.estimate("Classify {t}", model=llm["model"], max_tokens=20)["cost"].iloc[0]
    budget = round(3 * expected, 6)
    job = df.llm.submit("Classify {t}", max_tokens=20, budget=budget, concurrency=2, cache=False, **llm)
    report = job.report
    wait_until(lambda: report.answered_rows >= 10, 30, "ten answered rows")
    with paused(sim):  # nothing is answered from here until the card is drawn: the run holds still

        def still() -> bool:
            answered = sum(1 for e in sim.log if e["status"] == 200)
            return report.stats.in_flight == 2 and report.answered_rows == answered == report.stats.done

        wait_until(still, 30, "the answered rows to settle with two requests waiting")
        answered = report.answered_rows
        bill = billed(sim.log)
        projected = bill / answered * 80  # by hand: every row at the cost per answered row
        p = Panel(report, report.estimate, budget)
        p.update()
        assert report.answered_rows == answered < 80  # drawn while the run was unfinished
        job.cancel()
    job.result(timeout=30)
    svg = p.budget_bar.value
    scale = float(re.search(r'data-scale="([^"]+)"', svg).group(1))
    assert scale == pytest.approx(max(budget, projected, expected), rel=1e-3)
    seg = part(svg, "projected")
    assert float(seg["data-dollars"]) == pytest.approx(projected, rel=1e-3)
    assert float(seg["x"]) == pytest.approx(bill / scale * 1000, abs=0.05)
    assert float(seg["width"]) == pytest.approx((min(projected, budget) - bill) / scale * 1000, abs=0.05)
    assert "at the current cost per row" in p.budget_label.value


def test_budget_bar_geometry_past_the_budget():
    """Projected above the budget: the bar's scale grows (to twice the budget at most), the
    part the budget will not allow is drawn apart, the budget tick sits at budget/scale."""
    svg = charts.budget_bar(0.30, 1.0, expected=0.5, projected=1.5)
    assert float(re.search(r'data-scale="([^"]+)"', svg).group(1)) == 1.5
    assert float(part(svg, "spent")["width"]) == pytest.approx(200.0)  # 0.30 / 1.5
    seg = part(svg, "projected")
    assert float(seg["x"]) == pytest.approx(200.0) and float(seg["width"]) == pytest.approx(466.67, abs=0.01)
    over = part(svg, "over")
    assert float(over["x"]) == pytest.approx(666.67, abs=0.01) and float(over["width"]) == pytest.approx(333.33, abs=0.01)
    assert float(part(svg, "budget")["x"]) + 3 == pytest.approx(666.67, abs=0.01)
    huge = charts.budget_bar(0.1, 1.0, projected=10.0)
    assert float(re.search(r'data-scale="([^"]+)"', huge).group(1)) == 2.0  # capped at twice the budget
    assert part(charts.budget_bar(1.0, 1.0), "spent")["style"] == f"fill:{RED}"  # at the budget: red


# -- the sparkline -----------------------------------------------------------------------------


def test_sparkline_places_each_second_and_marks_429s():
    series = [(-59.0, 2.0, False), (-30.0, 4.0, True), (0.0, 1.0, False)]
    svg = charts.sparkline(series)
    points = re.search(r'data-part="rate" points="([^"]+)"', svg).group(1).split()
    xs = [float(p.split(",")[0]) for p in points]
    assert xs == pytest.approx([1000 * (1 - 59 / 60), 500.0, 1000.0], abs=0.01)
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[1] == min(ys)  # the peak (4 rows/s) is the highest point
    marks = re.findall(r'data-part="429" data-t="([^"]+)"', svg)
    assert marks == ["-30"]
    assert charts.sparkline([]) == ""


def test_sparkline_of_a_real_run_with_429s(llm, sim):
    sim.configure(fault_429=0.3, seed=7)
    out = frame(40).llm.apply("Classify {t}", max_tokens=10, cache=False, **llm)
    stats = out.llm.report.stats
    if not callable(getattr(stats, "rate_series", None)):
        pytest.skip("EngineStats.rate_series() (CONTRACTS C5) is not on this branch yet")
    series = stats.rate_series(window_s=60)
    svg = charts.sparkline(series)
    got_429 = sum(1 for e in sim.log if e["status"] == 429)
    assert got_429 > 0
    marks = re.findall(r'data-part="429"', svg)
    assert 1 <= len(marks) <= got_429  # one mark per second that saw any


# -- cost per model ----------------------------------------------------------------------------


def test_cost_bars_of_two_models_follow_the_bills(llm, sim):
    models = ["openai/gpt-4.1-mini", "openai/gpt-4.1-nano"]
    out = frame(20).llm.apply("Classify {t}", model=models, max_tokens=20, base_url=sim.base_url,
                              api_key=llm["api_key"], progress=False)
    mini = billed(sim.log, "gpt-4.1-mini")
    nano = billed(sim.log, "gpt-4.1-nano", (NANO_IN, NANO_OUT))
    html = reports_html(list(out.llm.report))
    bars = {m.group(1): dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(2)))
            for m in re.finditer(r'<rect data-part="cost" data-model="([^"]+)"([^>]*)>', html)}
    assert set(bars) == {"gpt-4.1-mini", "gpt-4.1-nano"}
    assert float(bars["gpt-4.1-mini"]["data-dollars"]) == pytest.approx(mini, rel=1e-4)
    assert float(bars["gpt-4.1-nano"]["data-dollars"]) == pytest.approx(nano, rel=1e-4)
    w_mini, w_nano = float(bars["gpt-4.1-mini"]["width"]), float(bars["gpt-4.1-nano"]["width"])
    assert w_nano / w_mini == pytest.approx(nano / mini, rel=1e-3)  # lengths in proportion


# -- the estimate, the refusal, the counts -------------------------------------------------------


def test_money_to_three_significant_figures_and_whole_seconds():
    assert [money3(x) for x in (0.0123456, 0.5, 1.2345, 12.345, 123.45, 1234.5, 9.996)] == [
        "$0.0123", "$0.50", "$1.23", "$12.3", "$123", "$1,230", "$10.0"]
    assert [seconds(x) for x in (0.2, 7.5, 35.4, 188.2)] == ["<1s", "8s", "35s", "3m 08s"]


@dataclass
class Way:  # the shape of money-cache's Estimate.ways entries (CONTRACTS / brief)
    name: str
    cost: float
    wall_s: float
    requests: int
    fits: bool
    cheapest: bool
    note: str = ""


def test_ways_render_as_a_table(llm):
    est = frame(10).llm.estimate("Classify {t}", model=llm["model"], max_tokens=20)
    e = type("E", (), {"ways": [Way("real time", 0.012345, 7.5, 10, True, False),
                                Way("batch", 0.0061725, 86400, 10, True, True, "up to 24 h"),
                                Way("packed x5", 0.0049, 3.2, 2, False, False)]})()
    html = ways_html(e)
    assert html.count("<tr") == 4 and "$0.0123" in html and "8s" in html and "1d 00h" in html
    assert "cheapest; up to 24 h" in html and "font-weight:600" in html
    assert "Ways to run it" in ways_text(e) and ways_html(est.iloc[0]) == ""  # no ways: nothing


def test_budget_error_card(llm):
    from llmbatch_pd import BudgetError

    with pytest.raises(BudgetError) as info:
        frame(50).llm.apply("Classify {t}", max_tokens=200, budget=0.000001, **llm)
    html = refused_html(info.value)
    assert "refused: over budget" in html.lower() and "not started" in html
    assert "Nothing was sent" in html and RED in html
    # the error carries the estimate it was judged on, and the card shows it as a table
    assert info.value.budget == 0.000001 and info.value.estimate.cost_for("realtime") > 0.000001
    assert "<table" in html and "Rows" in html and "50" in html


def test_live_counts_say_only_what_is_not_zero(llm, sim):
    out = frame(12).llm.apply("Classify {t}", max_tokens=10, budget=1.0, **llm)
    report = out.llm.report
    p = Panel(report, report.estimate, 1.0)
    p._render(final=False)
    counts = p.counts.value
    assert "12</b> answered" in counts and "×0" not in counts and "429" not in counts
    assert "retrying" not in counts and "spent" not in counts  # the budget line says the dollars
    assert "$" not in counts
    q = Panel(report, report.estimate)
    q.budget = None  # as for a run without one
    q._render(final=False)
    assert "spent" in q.counts.value  # no budget line: said here, once


def test_text_colours_keep_contrast_in_both_jupyterlab_themes():
    """The mixes the text colours ask the browser for, computed here from JupyterLab's theme
    values (light: #388e3c / #d32f2f / #f57c00 with black on white; dark: #4caf50 / #f44336 /
    #ff9800 with white on #212121). The browser test measures the rendered ones."""
    def lum(rgb):
        def lin(c):
            c /= 255
            return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (lin(x) for x in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    def ratio(a, b):
        la, lb = sorted((lum(a), lum(b)), reverse=True)
        return (la + 0.05) / (lb + 0.05)

    def hexrgb(h):
        return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))

    def mix(a, b, p=0.7):
        return tuple(x * p + y * (1 - p) for x, y in zip(a, b, strict=True))

    for text, light, dark in ((GREEN_TEXT, "#388e3c", "#4caf50"), (RED_TEXT, "#d32f2f", "#f44336"),
                              (AMBER_TEXT, "#f57c00", "#ff9800")):
        assert "70%" in text and "--jp-ui-font-color0" in text
        assert ratio(mix(hexrgb(light), (0, 0, 0)), (255, 255, 255)) >= 4.5
        assert ratio(mix(hexrgb(dark), (255, 255, 255)), hexrgb("#212121")) >= 4.5
        fallback = re.search(r"var\(--jp-[a-z-]+\d, (#[0-9a-f]{6})\)", text).group(1)
        assert ratio(mix(hexrgb(fallback), (0, 0, 0)), (255, 255, 255)) >= 4.5  # nbconvert, no variables
    assert BLUE


def test_several_model_card_has_rate_eta_and_summed_projection(llm, sim):
    """``model=[...]`` mid-way (held still as above): the card's total line has a rate and an
    ETA, and its budget bar projects the models' bills summed, each at its own cost per row."""
    from llmbatch_pd.ui.group import GroupPanel

    sim.configure(ttft_ms=40)
    models = ["openai/gpt-4.1-mini", "openai/gpt-4.1-nano"]
    job = frame(60).llm.submit("Classify {t}", model=models, max_tokens=20, budget=1.0, concurrency=2,
                               cache=False, base_url=sim.base_url, api_key=llm["api_key"])
    reports = list(job.report)
    wait_until(lambda: all(r.answered_rows >= 6 for r in reports), 30, "six answers from each model")
    with paused(sim):  # nothing is answered from here until the card is drawn

        def still() -> bool:
            answered = sum(1 for e in sim.log if e["status"] == 200)
            return (sum(r.stats.in_flight for r in reports) == 4 and min(r.stats.elapsed for r in reports) >= 1.2
                    and sum(r.answered_rows for r in reports) == answered == sum(r.stats.done for r in reports))

        wait_until(still, 30, "the answered rows to settle with four requests waiting")
        by_hand = {m: (billed(sim.log, m.split("/")[1], price), r.answered_rows)
                   for m, r, price in zip(models, reports, [(INPUT_PER_MTOK, OUTPUT_PER_MTOK), (NANO_IN, NANO_OUT)],
                                          strict=True)}
        projected = sum(bill / answered * 60 for bill, answered in by_hand.values())
        p = GroupPanel(reports, None, 1.0)
        p.update()
        assert [r.answered_rows for r in reports] == [a for _, a in by_hand.values()]  # drawn held still
        job.cancel()
    job.result(timeout=30)
    total = p.total_label.value
    m = re.search(r"<b>(\d+)</b> / 120 rows.*· ([\d.,]+) rows/s · ETA ((\d+)m )?(\d+(\.\d)?)s", total)
    assert m, total
    finished, rate = int(m.group(1)), float(m.group(2).replace(",", ""))
    eta = int(m.group(4) or 0) * 60 + float(m.group(5))
    assert eta == pytest.approx((120 - finished) / rate, rel=0.05, abs=1)  # the rows left at that rate
    assert float(part(p.budget_bar.value, "projected")["data-dollars"]) == pytest.approx(projected, rel=1e-3)
