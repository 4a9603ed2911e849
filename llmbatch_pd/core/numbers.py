"""Numbers for people: dollars, token counts, durations, rates.

Pure (no display libraries), so every message and display (the engine's budget messages, the
accessor's errors, the panel) shows the same figures: money to 3 significant figures.

Every function takes ``None`` (or NaN) and returns ``MISSING`` for it, so displays never have
to special-case an unknown figure (a model without a price, a run that has not started).
"""

from __future__ import annotations

import math

MISSING = "—"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _trim(text: str, keep: int = 0) -> str:
    """Drop trailing zeros after the decimal point, keeping at least ``keep`` decimals."""
    if "." not in text:
        return text
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    frac = frac.ljust(keep, "0")
    return f"{whole}.{frac}" if frac else whole


def money(dollars: float | None, *, digits: int = 3) -> str:
    """Dollars with as many decimals as the amount needs.

    ``12.345 -> "$12.35"``, ``1234.5 -> "$1,234.50"``, ``0.0123 -> "$0.0123"``,
    ``0.5 -> "$0.50"``, ``0.000045 -> "$0.000045"``, ``0 -> "$0.00"``.
    Amounts of a dollar or more get cents; smaller ones ``digits`` significant digits
    (at least two decimals), because a run of cheap requests costs fractions of a cent.
    """
    if _missing(dollars):
        return MISSING
    sign = "-" if dollars < 0 else ""
    x = abs(float(dollars))
    if x == 0 or x < 5e-10:
        return "$0.00"
    if round(x, 2) >= 1:
        return f"{sign}${x:,.2f}"
    decimals = max(2, digits - 1 - math.floor(math.log10(x)))
    text = f"{x:.{decimals}f}"
    if float(text) >= 1:  # 0.9996 rounds up to a dollar
        return f"{sign}${x:,.2f}"
    return f"{sign}${_trim(text, keep=2)}"


def money_sig(dollars: float | None, digits: int = 3) -> str:
    """Dollars to ``digits`` significant figures, for tables of estimates:
    ``12.345 -> "$12.3"``, ``1234.5 -> "$1,230"``, ``0.0062618 -> "$0.00626"``."""
    if _missing(dollars):
        return MISSING
    x = float(dollars)
    if x == 0:
        return "$0.00"
    rounded = float(f"{x:.{digits}g}")
    if abs(rounded) >= 10 ** (digits - 1):
        return f"{'-' if rounded < 0 else ''}${abs(rounded):,.0f}"
    return money(rounded, digits=digits) if abs(rounded) < 1 else f"${rounded:,.{digits - 1 - math.floor(math.log10(abs(rounded)))}f}"


def money_range(low: float | None, high: float | None) -> str:
    """``"$0.95–$4.10"``; the missing side shows as ``—``."""
    if _missing(low) and _missing(high):
        return MISSING
    return f"{money(low)}–{money(high)}"


_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def tokens(n: float | None) -> str:
    """Token (or any large) counts with three significant digits.

    ``950 -> "950"``, ``1234 -> "1.23k"``, ``12400 -> "12.4k"``, ``123456 -> "123k"``,
    ``1_200_000 -> "1.2M"``, ``999_999 -> "1M"``.
    """
    if _missing(n):
        return MISSING
    sign = "-" if n < 0 else ""
    x = abs(float(n))
    if x < 999.5:
        return f"{sign}{x:.0f}" if x == int(x) or x >= 10 else f"{sign}{_trim(f'{x:.1f}')}"
    for i, (scale, suffix) in enumerate(_SUFFIXES):
        if x >= scale * 0.9995:
            v = x / scale
            text = _trim(f"{v:.{max(0, 2 - math.floor(math.log10(v)))}f}")
            if float(text) >= 1000 and i > 0:  # 999_999 -> "1000k" -> "1M"
                scale, suffix = _SUFFIXES[i - 1]
                text = _trim(f"{x / scale:.2f}")
            return f"{sign}{text}{suffix}"
    return f"{sign}{x:.0f}"  # pragma: no cover (unreachable: x >= 1000 here)


def count(n: float | None) -> str:
    """Exact counts with thousands separators: ``12345 -> "12,345"``."""
    if _missing(n):
        return MISSING
    return f"{int(n):,}"


def duration(seconds: float | None) -> str:
    """``0.012 -> "12ms"``, ``0.4 -> "0.4s"``, ``45 -> "45s"``, ``200 -> "3m 20s"``, ``3900 -> "1h 05m"``,
    ``200_000 -> "2d 07h"``."""
    if _missing(seconds) or seconds == math.inf:
        return MISSING
    s = max(0.0, float(seconds))
    if 0 < s < 0.095:
        return f"{max(1, round(s * 1000))}ms"
    if s < 9.95:
        return f"{_trim(f'{s:.1f}')}s"
    total = int(round(s))
    if total < 60:
        return f"{total}s"
    minutes, sec = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if minutes and sec >= 30:  # round to the nearest minute
        minutes += 1
        if minutes == 60:
            hours, minutes = hours + 1, 0
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def rate(per_second: float | None, unit: str = "rows") -> str:
    """A throughput in the unit of time that keeps it readable.

    ``35.24 -> "35.2 rows/s"``, ``1234 -> "1,234 rows/s"``, ``0.05 -> "3 rows/min"``,
    ``0.0001 -> "0.36 rows/h"``, ``0 -> "0 rows/s"``.
    """
    if _missing(per_second):
        return MISSING
    x = max(0.0, float(per_second))
    if x == 0:
        return f"0 {unit}/s"
    for value, per in ((x, "s"), (x * 60, "min"), (x * 3600, "h")):
        if value >= 1 or per == "h":
            if value >= 100:
                return f"{value:,.0f} {unit}/{per}"
            if value >= 10:
                return f"{_trim(f'{value:.1f}')} {unit}/{per}"
            return f"{_trim(f'{value:.2f}')} {unit}/{per}"
    raise AssertionError("unreachable")  # pragma: no cover


def percent(fraction: float | None) -> str:
    """``0.4213 -> "42%"``, ``0.004 -> "0.4%"``, ``1 -> "100%"``."""
    if _missing(fraction):
        return MISSING
    p = float(fraction) * 100
    if 0 < abs(p) < 1:
        return f"{_trim(f'{p:.1f}')}%"
    if 99 < p < 100:  # never show 100% for an unfinished thing
        return "99%"
    return f"{p:.0f}%"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "row") -> "1 row"``, ``plural(12345, "row") -> "12,345 rows"``."""
    return f"{count(n)} {word if n == 1 else (many or word + 's')}"


__all__ = ["MISSING", "count", "duration", "money", "money_range", "percent", "plural", "rate", "tokens"]
