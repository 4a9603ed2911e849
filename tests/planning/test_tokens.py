"""Token counting: chat overhead, the heuristic's shape per script, and the offline guarantee."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from llmbatch_pd.planning import tokens

ENGLISH = "The battery lasts about two days with normal use, which is better than I expected."
VIETNAMESE = "Sản phẩm dùng rất tốt, pin trâu, giao hàng nhanh. Tôi sẽ tiếp tục ủng hộ shop."
CHINESE = "这款手机的电池续航非常好正常使用可以坚持两天性价比很高"
JAPANESE = "このコーヒーミルはとても静かで掃除も簡単です"


@pytest.fixture(autouse=True)
def fresh_caches():
    """Each test decides afresh (the module caches one decision per process)."""
    tokens.counter_for.cache_clear()
    tokens._loaded.clear()
    yield
    tokens.counter_for.cache_clear()
    tokens._loaded.clear()


@pytest.fixture
def no_tiktoken(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # makes `import tiktoken` fail


@pytest.fixture
def estimate(no_tiktoken):
    return tokens.counter_for("openai/gpt-4.1-mini")


def test_fallback_says_it_is_an_estimate(estimate):
    assert estimate.exact is False
    assert "estimate" in estimate.name
    assert "estimate" in repr(estimate)


def test_non_openai_models_are_estimates_even_with_tiktoken():
    for model in ("anthropic/claude-haiku-4-5", "claude-haiku-4-5", "gemini/gemini-2.5-flash"):
        counter = tokens.counter_for(model)
        assert not counter.exact and "estimate" in counter.name


def test_message_overhead(estimate):
    count = estimate.count
    one = [{"role": "user", "content": "Classify this review."}]
    expected = (
        tokens.REPLY_PRIMING + tokens.TOKENS_PER_MESSAGE + count("user") + count(one[0]["content"])
    )
    assert (
        estimate.count_messages(one) == expected == 3 + 3 + count("user") + count(one[0]["content"])
    )

    two = [{"role": "system", "content": "Be brief."}, *one]
    assert estimate.count_messages(two) == expected + 3 + count("system") + count("Be brief.")

    named = [{"role": "user", "name": "alice", "content": one[0]["content"]}]
    assert estimate.count_messages(named) == expected + count("alice") + tokens.TOKENS_PER_NAME

    assert estimate.count_messages([]) == 3  # the reply priming alone


def test_content_parts_count_like_a_string(estimate):
    text = "Sentiment of: I loved it"
    as_string = [{"role": "user", "content": text}]
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Sentiment of: "},
                {"type": "image_url", "image_url": {"url": "data:..."}},  # not counted
                {"type": "text", "text": "I loved it"},
            ],
        }
    ]
    split = estimate.count("Sentiment of: ") + estimate.count("I loved it")
    assert (
        estimate.count_messages(as_parts)
        == estimate.count_messages(as_string) - estimate.count(text) + split
    )


def test_module_functions_delegate(no_tiktoken):
    messages = [{"role": "user", "content": VIETNAMESE}]
    counter = tokens.counter_for("gpt-4o-mini")
    assert tokens.count_text(VIETNAMESE, "gpt-4o-mini") == counter.count(VIETNAMESE)
    assert tokens.count_messages(messages, "gpt-4o-mini") == counter.count_messages(messages)
    assert tokens.count_text("") == 0
    assert tokens.count_text(" ") == 1


@pytest.mark.parametrize("text", [ENGLISH, VIETNAMESE, CHINESE, "12345 ", "😀", "a\n", "    x"])
def test_monotonic_in_length(estimate, text):
    counts = [estimate.count(text * k) for k in range(1, 12)]
    assert counts == sorted(counts)
    assert counts[-1] > counts[0]


def test_appending_never_lowers_the_count(estimate):
    alphabet = "aZé ệ中한ж\n  7.,!😀\u200d"
    rng = random.Random(7)
    for _ in range(200):
        text, last = "", 0
        for _ in range(40):
            text += rng.choice(alphabet)
            now = estimate.count(text)
            assert now >= last, repr(text)
            last = now


def test_vietnamese_costs_more_per_character_than_english(estimate):
    per_char = {t: estimate.count(t) / len(t) for t in (ENGLISH, VIETNAMESE)}
    assert per_char[VIETNAMESE] > 1.3 * per_char[ENGLISH]
    # o200k_base: English ~5 characters a token, Vietnamese ~3.5 (benchmarks/calibrate_tokens.py)
    assert 3.5 < len(ENGLISH) / estimate.count(ENGLISH) < 7
    assert 2.5 < len(VIETNAMESE) / estimate.count(VIETNAMESE) < 4.5


@pytest.mark.parametrize("text", [CHINESE, JAPANESE, "배터리가오래가고화면도밝아서"])
def test_cjk_is_about_one_token_per_character(estimate, text):
    assert 0.5 <= estimate.count(text) / len(text) <= 1.3


def test_emoji(estimate):
    assert estimate.count("😀") >= 1
    assert 3 <= estimate.count("😀😃😄") <= 9
    family = "👨\u200d👩\u200d👧\u200d👦"  # 4 emoji joined by 3 ZWJ: 11 tokens in o200k_base
    assert estimate.count(family) > estimate.count("👨👩👧👦") >= 4
    assert estimate.count(family) >= 8


def test_legacy_models_use_cl100k_coefficients(no_tiktoken):
    assert "cl100k_base" in tokens.counter_for("gpt-4").name
    assert "cl100k_base" in tokens.counter_for("gpt-3.5-turbo").name
    assert "o200k_base" in tokens.counter_for("gpt-4o").name
    assert "o200k_base" in tokens.counter_for("gpt-4.1-mini").name
    # Vietnamese costs far more in cl100k_base (~2 chars a token) than in o200k_base (~3.5).
    assert tokens.count_text(VIETNAMESE, "gpt-4") > 1.4 * tokens.count_text(VIETNAMESE, "gpt-4o")


# --- the exact path and the offline guarantee, with a stand-in tiktoken -----------------


class FakeEncoding:
    def __init__(self, name, *, pat_str, mergeable_ranks, special_tokens, explicit_n_vocab=None):
        self.name, self.pat_str, self.ranks = name, pat_str, mergeable_ranks

    def encode_ordinary(self, text):
        return list(text.encode())  # one "token" per byte: easy to tell from the heuristic


def fake_tiktoken() -> types.ModuleType:
    module = types.ModuleType("tiktoken")

    def encoding_name_for_model(model):
        if model.startswith("gpt-"):
            return "o200k_base"
        raise KeyError(model)

    def get_encoding(name):
        raise AssertionError("tiktoken.get_encoding downloads on a cache miss: never call it")

    module.encoding_name_for_model = encoding_name_for_model
    module.get_encoding = get_encoding
    module.Encoding = FakeEncoding
    return module


def install_cache_file(monkeypatch, cache_dir: Path, content: bytes, *, sha256: str | None = None):
    """Put ``content`` where tiktoken would cache o200k_base, and make our check expect it."""
    url, _ = tokens._ENCODING_FILES["o200k_base"]
    digest = sha256 or hashlib.sha256(content).hexdigest()
    monkeypatch.setitem(tokens._ENCODING_FILES, "o200k_base", (url, digest))
    (cache_dir / hashlib.sha1(url.encode()).hexdigest()).write_bytes(content)


def test_cache_path_mirrors_tiktoken(monkeypatch, tmp_path):
    url = "https://example.invalid/x.tiktoken"
    key = hashlib.sha1(url.encode()).hexdigest()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert tokens._tiktoken_cache_path(url) == str(tmp_path / key)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "gym"))
    assert tokens._tiktoken_cache_path(url) == str(tmp_path / "gym" / key)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR")
    assert tokens._tiktoken_cache_path(url).endswith(os.path.join("data-gym-cache", key))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken: "" means always download
    assert tokens._tiktoken_cache_path(url) is None


def test_exact_when_the_cached_file_checks_out(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiktoken", fake_tiktoken())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    install_cache_file(monkeypatch, tmp_path, b"YQ== 0\nYg== 1\n\n")  # "a" -> 0, "b" -> 1
    counter = tokens.counter_for("openai/gpt-4.1-mini")
    assert counter.exact and counter.name == "tiktoken o200k_base"
    assert counter.count("héllo") == 6  # the fake's byte count, not the heuristic's
    encoding = tokens._loaded["o200k_base"]
    assert encoding.ranks == {b"a": 0, b"b": 1}
    assert encoding.pat_str == tokens._O200K_PATTERN


def test_missing_or_corrupt_file_falls_back_quietly(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiktoken", fake_tiktoken())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert not tokens.counter_for("gpt-4.1-mini").exact  # no file: get_encoding never called

    tokens.counter_for.cache_clear()
    tokens._loaded.clear()
    install_cache_file(monkeypatch, tmp_path, b"YQ== 0\n", sha256="0" * 64)  # hash mismatch
    counter = tokens.counter_for("gpt-4.1-mini")
    assert not counter.exact and "estimate" in counter.name


def test_one_attempt_per_process(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiktoken", fake_tiktoken())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert tokens._load_encoding("o200k_base") is None
    install_cache_file(monkeypatch, tmp_path, b"YQ== 0\n")  # appears later: not looked at again
    assert tokens._load_encoding("o200k_base") is None


def test_unknown_openai_model_assumes_o200k_but_not_exact(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiktoken", fake_tiktoken())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    install_cache_file(monkeypatch, tmp_path, b"YQ== 0\n")
    counter = tokens.counter_for("openai/o9-preview")  # the fake tiktoken does not know it
    assert counter.name == "tiktoken o200k_base (assumed)" and not counter.exact
    assert not tokens.counter_for("claude-haiku-4-5").exact  # bare, unknown: not OpenAI's


NO_NETWORK = textwrap.dedent(
    """
    import socket, sys

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from llmbatch_pd.planning import tokens

    for model in (None, "gpt-4.1-mini", "openai/gpt-4o", "gpt-4", "anthropic/claude-haiku-4-5"):
        counter = tokens.counter_for(model)
        counter.count_messages([{"role": "user", "content": "Xin chào 你好 hello 😀"}])
        print(model, counter.exact, counter.name)
    """
)

DOWNLOADING_TIKTOKEN = textwrap.dedent(
    """
    import socket

    class Encoding:
        def __init__(self, *args, **kwargs):
            raise AssertionError("no encoding file exists here")

    def encoding_name_for_model(model):
        return "cl100k_base" if model == "gpt-4" else "o200k_base"

    def get_encoding(name):  # what the real one does on a cache miss
        socket.create_connection(("openaipublic.blob.core.windows.net", 443))
    """
)


def run_offline(tmp_path: Path, *, pythonpath: list[str]) -> subprocess.CompletedProcess[str]:
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(empty_cache)}
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join(
        [*pythonpath, str(Path(__file__).resolve().parents[2]), *inherited]
    )
    return subprocess.run(
        [sys.executable, "-c", NO_NETWORK], env=env, capture_output=True, text=True, timeout=120
    )


def test_counting_never_opens_a_connection(tmp_path):
    """With the real tiktoken if installed (no cached file), else without it."""
    result = run_offline(tmp_path, pythonpath=[])
    assert result.returncode == 0, result.stderr
    assert "estimate" in result.stdout


def test_a_downloading_tiktoken_is_never_asked(tmp_path):
    fake = tmp_path / "fake"
    (fake / "tiktoken").mkdir(parents=True)
    (fake / "tiktoken" / "__init__.py").write_text(DOWNLOADING_TIKTOKEN)
    result = run_offline(tmp_path, pythonpath=[str(fake)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(" False heuristic estimate" in line for line in lines)


def test_real_tiktoken_matches_when_its_file_is_cached():
    """Only where tiktoken and its o200k_base file are both already on this machine."""
    tiktoken = pytest.importorskip("tiktoken")
    url, _ = tokens._ENCODING_FILES["o200k_base"]
    path = tokens._tiktoken_cache_path(url)
    if path is None or not os.path.isfile(path):
        pytest.skip("o200k_base is not in tiktoken's cache (tiktoken would download it)")
    counter = tokens.counter_for("gpt-4.1-mini")
    assert counter.exact
    reference = tiktoken.get_encoding("o200k_base")  # safe: the file is cached
    for text in (ENGLISH, VIETNAMESE, CHINESE, "<|endoftext|> is plain text here"):
        assert counter.count(text) == len(reference.encode_ordinary(text))
