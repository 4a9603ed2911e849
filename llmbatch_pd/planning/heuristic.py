"""The token heuristic, for models whose tokenizer is not on this machine: character classes
counted in C (``str.count``/``translate``), weighted by coefficients fitted per encoding
(``benchmarks/calibrate_tokens.py``). About 8 us for a 100-character text."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# --- the heuristic -----------------------------------------------------------------------

# Each character is mapped to a one-letter class; features are then counted on that class
# string with str.count and str.translate + split, all in C (~8 us for a 100-character
# text: faster than tiktoken itself). Classes:
#   a ASCII letter      l accented Latin letter (Latin-1, Extended-A/B, Vietnamese block)
#   c CJK ideograph or kana   k Hangul          o Greek, Cyrillic, Hebrew, Arabic letter
#   i any other letter or combining mark (Indic, Thai, ...)
#   e emoji / pictograph                        z emoji modifier: ZWJ, variation selector,
#   d digit                                       skin tone, tag
#   p punctuation or symbol   n newline   " " other whitespace


def _classify(ch: str) -> str:
    o = ord(ch)
    if o < 128:
        if ch.isalpha():
            return "a"
        if ch.isdigit():
            return "d"
        if ch in "\n\r":
            return "n"
        return " " if ch.isspace() else "p"
    if o in (0x200D, 0xFE0E, 0xFE0F) or 0x1F3FB <= o <= 0x1F3FF or 0xE0020 <= o <= 0xE007F:
        return "z"
    if 0x1F000 <= o <= 0x1FAFF or 0x2600 <= o <= 0x27BF or 0x2B00 <= o <= 0x2BFF:
        return "e"
    if (0xC0 <= o <= 0x24F or 0x1E00 <= o <= 0x1EFF) and ch.isalpha():
        return "l"
    if (
        0x3040 <= o <= 0x30FF  # hiragana, katakana
        or 0x31F0 <= o <= 0x31FF
        or 0x3400 <= o <= 0x4DBF  # CJK extension A
        or 0x4E00 <= o <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= o <= 0xFAFF
        or 0xFF66 <= o <= 0xFF9F  # half-width katakana
        or 0x20000 <= o <= 0x3FFFF
    ):
        return "c"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "k"
    category = unicodedata.category(ch)
    if category[0] in "LM":
        # Alphabets with word-sized merges (Greek, Cyrillic, Armenian, Hebrew, Arabic) vs
        # the rest (Indic, Thai, ...), which cost far more per character, in cl100k_base most.
        return "o" if 0x370 <= o <= 0x6FF else "i"
    if category[0] == "N":
        return "d"
    if category[0] == "Z":
        return " "
    return "p"


class _ClassTable(dict[int, str]):
    """str.translate table that classifies each new code point once, then hits the dict."""

    def __missing__(self, code_point: int) -> str:
        cls = self[code_point] = _classify(chr(code_point))
        return cls


_TABLE = _ClassTable()

FEATURES = (
    "ascii_word",  # a run of ASCII letters: most English words are one token
    "accented_word",  # a Latin run with an accented letter (Vietnamese, French, Polish...)
    "ascii_letter",  # long or rare words split into several tokens
    "accented_letter",  # 2-3 UTF-8 bytes each, fewer merges
    "cjk_char",  # CJK ideograph or kana: o200k_base merges common pairs
    "hangul_char",
    "alphabet_letter",  # Greek, Cyrillic, Armenian, Hebrew, Arabic
    "alphabet_word",  # a run of such letters
    "other_letter",  # Indic, Thai and every other script
    "emoji",  # a pictograph: 1-2 tokens
    "emoji_modifier",  # ZWJ, variation selector, skin tone: usually split byte-wise
    "digit_group",  # digits go in groups of up to 3, one token each
    "punct",  # each punctuation or symbol character
    "punct_run",  # a run of them: usually one token with its leading space
    "newline_run",
    "space_run",  # indentation or repeated spaces
)


def _runs_of(keep: str, drop: str = "") -> dict[int, str | None]:
    """A table turning a class string into runs of ``keep`` separated by spaces."""
    return {ord(c): c if c in keep else None if c in drop else " " for c in "alckoiezdpn "}


# Runs are counted with translate + split, both in C: several times faster than re.findall.
_LATIN_RUNS = _runs_of("al")
_ACCENTED_RUNS = _runs_of("l", drop="a")  # with the a's gone, only runs holding an l remain
_ALPHABET_RUNS = _runs_of("o")
_DIGIT_RUNS = _runs_of("d")
_PUNCT_RUNS = _runs_of("p")
_NEWLINE_RUNS = _runs_of("n")
_SPACE_RUN = re.compile("[ n] +")  # a space after a space or a newline, and the rest of the run


def features(text: str) -> tuple[int, ...]:
    """The heuristic's feature counts for ``text``, in ``FEATURES`` order (for calibration)."""
    s = text.translate(_TABLE)
    latin_runs = len(s.translate(_LATIN_RUNS).split())
    # The "in" tests are memchr-fast and skip work for classes the text does not have.
    accented_runs = len(s.translate(_ACCENTED_RUNS).split()) if "l" in s else 0
    return (
        latin_runs - accented_runs,
        accented_runs,
        s.count("a"),
        s.count("l"),
        s.count("c"),
        s.count("k"),
        s.count("o"),
        len(s.translate(_ALPHABET_RUNS).split()) if "o" in s else 0,
        s.count("i"),
        s.count("e"),
        s.count("z"),
        sum((len(r) + 2) // 3 for r in s.translate(_DIGIT_RUNS).split()) if "d" in s else 0,
        s.count("p"),
        len(s.translate(_PUNCT_RUNS).split()) if "p" in s else 0,
        len(s.translate(_NEWLINE_RUNS).split()) if "n" in s else 0,
        len(_SPACE_RUN.findall(s)) if "  " in s or "n " in s else 0,
    )


# Tokens per feature, fitted by benchmarks/calibrate_tokens.py (non-negative least squares,
# weighted by 1/sqrt(tokens)) against tiktoken's o200k_base and cl100k_base over the sample
# corpus in that script. Re-run it to refit; it prints these dicts.
# fmt: off
COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "o200k_base": (0.738, 0.512, 0.060, 0.522, 0.743, 0.745, 0.162, 0.902, 0.354, 1.502, 2.042, 1.239, 0.089, 0.834, 0.503, 1.650),
    "cl100k_base": (0.702, 1.639, 0.071, 0.496, 1.147, 1.354, 0.000, 4.071, 1.133, 2.453, 2.450, 1.223, 0.000, 0.963, 0.515, 1.762),
}
# fmt: on


def heuristic_counter(coefficients: tuple[float, ...]) -> Callable[[str], int]:
    def count(text: str) -> int:
        estimate = sum(c * f for c, f in zip(coefficients, features(text), strict=True))
        return max(1, round(estimate))

    return count
