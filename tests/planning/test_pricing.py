"""Prices from genai-prices' bundled data, and usage-to-dollars checked against its own maths."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import genai_prices
import pytest

from llmbatch_pd.core.types import Usage
from llmbatch_pd.planning import pricing
from llmbatch_pd.planning.pricing import (
    AS_GIVEN,
    Price,
    context_window,
    cost,
    price_for,
    resolve_provider,
)

# Noon UTC today: inside DeepSeek's standard-price window (00:30-16:30 UTC) in the data.
NOON = datetime.now(tz=UTC).replace(hour=12, minute=0, second=0, microsecond=0)

GENAI_ID = {
    "openai": "openai",
    "anthropic": "anthropic",
    "deepseek": "deepseek",
    "gemini": "google",
}

MODELS = [
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-haiku-4-5"),
    ("deepseek", "deepseek-chat"),
    ("gemini", "gemini-2.5-flash"),
    ("anthropic", "claude-sonnet-4-5"),  # tiered: below the 200k threshold, the base tier
]

USAGES = [
    Usage(input_tokens=1_000, output_tokens=200),
    Usage(input_tokens=12_345, output_tokens=678, cached_tokens=10_000),
    Usage(input_tokens=0, output_tokens=0),
    Usage(input_tokens=150_000, output_tokens=4_000, cached_tokens=100_000),
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def genai_total(provider: str, model: str, usage: Usage) -> float:
    """genai-prices' own price for the same usage (OpenAI-style: cached is part of input)."""
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model_ref=model,
        provider_id=GENAI_ID[provider],
        genai_request_timestamp=NOON,
    )
    return float(calc.total_price)


@pytest.mark.parametrize(("provider", "model"), MODELS)
@pytest.mark.parametrize(
    "usage", USAGES, ids=lambda u: f"in{u.input_tokens}-cached{u.cached_tokens}"
)
def test_cost_matches_genai_prices(provider, model, usage):
    price = price_for(provider, model)
    assert price is not None and price.source == "genai-prices"
    assert cost(usage, price) == pytest.approx(
        genai_total(provider, model, usage), rel=1e-12, abs=1e-15
    )


def test_cache_writes_match_genai_prices():
    usage = Usage(
        input_tokens=10_000, output_tokens=700, cached_tokens=3_000, cache_write_tokens=2_000
    )
    price = price_for("anthropic", "claude-haiku-4-5")
    assert price is not None and price.cache_write_per_mtok == 1.25
    expected = (5_000 * 1.0 + 3_000 * 0.1 + 2_000 * 1.25 + 700 * 5.0) / 1e6
    assert cost(usage, price) == pytest.approx(expected)
    assert cost(usage, price) == pytest.approx(genai_total("anthropic", "claude-haiku-4-5", usage))


def test_cost_by_hand():
    price = Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_tokens=400_000)
    assert cost(usage, price) == pytest.approx(0.6 * 2 + 0.4 * 0.5 + 0.5 * 8)
    no_cache_price = Price(input_per_mtok=2.0, output_per_mtok=8.0)  # cached and writes at input
    usage = Usage(
        input_tokens=1_000_000, output_tokens=0, cached_tokens=400_000, cache_write_tokens=100_000
    )
    assert cost(usage, no_cache_price) == pytest.approx(2.0)


def test_inconsistent_usage_is_clamped_not_raised():
    price = Price(1.0, 1.0, 0.1)
    assert cost(Usage(input_tokens=10, cached_tokens=50), price) == pytest.approx(50 * 0.1 / 1e6)


@pytest.mark.parametrize(("provider", "model"), MODELS)
def test_batch_is_exactly_half(provider, model):
    price = price_for(provider, model)
    assert price is not None
    for usage in USAGES:
        assert cost(usage, price, batch=True) == cost(usage, price) / 2


def test_deepseek_has_a_cache_hit_price():
    price = price_for("deepseek", "deepseek-chat")
    assert price is not None
    assert price.cached_input_per_mtok is not None
    assert 0 < price.cached_input_per_mtok < price.input_per_mtok


def test_time_of_day_prices_take_the_dearest_window():
    """DeepSeek's bundled data has an off-peak discount: budgets must not count on it."""
    price = price_for("deepseek", "deepseek-chat")
    assert price is not None
    at_night = datetime.now(tz=UTC).replace(hour=20, minute=0)
    calc = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1_000_000),
        model_ref="deepseek-chat",
        provider_id="deepseek",
        genai_request_timestamp=at_night,
    )
    assert price.input_per_mtok >= float(calc.total_price)


def test_tiered_prices_use_the_base_tier():
    price = price_for("anthropic", "claude-sonnet-4-5")
    assert price is not None
    assert (price.input_per_mtok, price.output_per_mtok) == (3.0, 15.0)  # not the >200k tier


def test_provider_names_and_prefixes():
    assert price_for("gemini", "gemini-2.5-flash") == price_for("google", "gemini-2.5-flash")
    assert price_for("openai", "openai/gpt-4.1-mini") == price_for("openai", "gpt-4.1-mini")
    assert price_for("OpenAI", "GPT-4.1-mini") == price_for("openai", "gpt-4.1-mini")
    dated = price_for("openai", "gpt-4.1-mini-2025-04-14")
    assert dated == price_for("openai", "gpt-4.1-mini")


def test_unknown_model_is_none():
    assert price_for("openai", "no-such-model-xyz") is None
    assert price_for("no-such-provider", "gpt-4.1-mini") is None
    assert price_for("anthropic", "gpt-4.1-mini") is None


def test_overrides():
    two = {"openai/my-finetune": (1.0, 4.0)}
    assert price_for("openai", "my-finetune", two) == Price(1.0, 4.0, None, None, "override")
    three = {"my-finetune": (1.0, 4.0, 0.25)}
    assert price_for("openai", "my-finetune", three) == Price(1.0, 4.0, 0.25, None, "override")
    as_dict = {"claude-haiku-4-5": {"input": 2, "output": 10, "cache_write": 2.5}}
    got = price_for("anthropic", "claude-haiku-4-5", as_dict)
    assert got == Price(2.0, 10.0, None, 2.5, "override")
    full_names = {
        "gpt-4o-mini": {
            "input_per_mtok": 0.1,
            "output_per_mtok": 0.2,
            "cached_input_per_mtok": 0.05,
        }
    }
    assert price_for("openai", "gpt-4o-mini", full_names) == Price(0.1, 0.2, 0.05, None, "override")
    # "provider/model" wins over "model"; an override for another model changes nothing.
    both = {"gpt-4o-mini": (9.0, 9.0), "openai/gpt-4o-mini": (1.0, 2.0), "gpt-4.1": (7.0, 7.0)}
    assert price_for("openai", "gpt-4o-mini", both).input_per_mtok == 1.0
    assert price_for("openai", "gpt-4.1-mini", both) == price_for("openai", "gpt-4.1-mini")
    ready = Price(3.0, 3.0)
    assert price_for("openai", "x", {"x": ready}) is ready


@pytest.mark.parametrize(
    "bad",
    [
        (1.0,),
        (1.0, 2.0, 3.0, 4.0),
        (-1.0, 2.0),
        (1.0, float("nan")),
        ("1", 2),
        (True, 2.0),
        {"input": 1.0},
        {"inptu": 1, "output": 2},
        5,
    ],
)
def test_bad_overrides_say_what_is_wrong(bad):
    with pytest.raises(ValueError, match="price override for 'm'"):
        price_for("openai", "m", {"m": bad})


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4.1-mini", "openai"),
        ("gpt-4o-mini", "openai"),
        ("o3-mini", "openai"),
        ("claude-haiku-4-5", "anthropic"),
        ("claude-sonnet-4-5-20250929", "anthropic"),
        ("deepseek-chat", "deepseek"),
        ("deepseek-reasoner", "deepseek"),
        ("gemini-2.5-flash", "gemini"),
        ("gpt-99-turbo", "openai"),  # not in the catalogue, but OpenAI's naming rule matches
        ("openai/gpt-4.1-mini", "openai"),
        ("google/gemini-2.5-flash", "gemini"),
        ("llama-3.3-70b", None),
        ("acme/gpt-4.1-mini", None),
    ],
)
def test_resolve_provider(model, provider):
    assert resolve_provider(model) == provider


@pytest.mark.parametrize(
    ("provider", "model", "window"),
    [
        ("openai", "gpt-4.1", 1_047_576),
        ("openai", "gpt-4.1-mini", 1_047_576),
        ("openai", "gpt-4.1-nano-2025-04-14", 1_047_576),
        ("openai", "gpt-4o", 128_000),
        ("openai", "gpt-4o-mini", 128_000),
        ("anthropic", "claude-haiku-4-5", 200_000),
        ("anthropic", "claude-sonnet-4-5", 200_000),
        ("deepseek", "deepseek-chat", 128_000),
        ("gemini", "gemini-2.5-flash", 1_048_576),
        ("openai", "gpt-5-mini", 400_000),  # from genai-prices
        ("openai", "no-such-model-xyz", None),
    ],
)
def test_context_window(provider, model, window):
    assert context_window(provider, model) == window


def test_lookups_start_no_updater_thread():
    before = set(threading.enumerate())
    pricing._catalogue_price.cache_clear()
    for provider, model in MODELS:
        price_for(provider, model)
        context_window(provider, model)
    resolve_provider("gpt-4.1-mini")
    assert set(threading.enumerate()) <= before


def test_importing_pricing_does_not_import_genai_prices():
    path = Path(pricing.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('p', {str(path)!r})\n"
        "module = sys.modules['p'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert 'genai_prices' not in sys.modules, 'imported at module level'\n"
        "assert module.price_for('openai', 'gpt-4.1-mini') is not None\n"
        "assert 'genai_prices' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_name_sent_as_given_is_priced_by_its_bare_name_or_not_at_all():
    # gpt-4o behind a gateway is OpenAI's gpt-4o: $2.50 in, $10.00 out per million (OpenAI's page)
    price = price_for(AS_GIVEN, "gpt-4o")
    assert (price.input_per_mtok, price.output_per_mtok) == (2.5, 10.0)
    assert price_for(AS_GIVEN, "gateway/gpt-4o") is None  # a prefix we do not know: no guess
    assert price_for(AS_GIVEN, "llama3") is None
    assert price_for(AS_GIVEN, "gateway/x", {"gateway/x": (1, 2)}).input_per_mtok == 1.0


def test_a_cost_the_provider_reported_is_the_cost():
    listed = Price(0.40, 1.60)
    assert cost(Usage(1_000_000, 0), listed) == 0.40
    assert cost(Usage(1_000_000, 0, cost=0.0123), listed) == 0.0123  # the bill, not the list
    assert cost(Usage(1_000_000, 0, cost=0.0123), listed, batch=True) == 0.0123  # already billed
    assert cost(Usage(1_000_000, 0), None) == 0.0  # no price: the displays say "price unknown"
