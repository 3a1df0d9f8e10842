"""Colours and number formats shared by every section, so the report reads as one piece."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = [
    "COLORS",
    "fmt_count",
    "fmt_date",
    "fmt_days",
    "fmt_money",
    "fmt_p",
    "fmt_pct",
    "join_words",
    "stage_colors",
]

#: Outcome and accent colours (Okabe–Ito, safe for colour-blind readers), used everywhere.
COLORS: dict[str, str] = {
    "won": "#009E73",
    "lost": "#D55E00",
    "open": "#0072B2",
    "naive": "#BBBBBB",
    "accent": "#E69F00",
    "ink": "#1F2933",
    "muted": "#616E7C",
    "grid": "#E4E7EB",
}


def stage_colors(n: int) -> list[str]:
    """``n`` shades of the ``open`` blue, light (first stage) to dark (last stage).

    Examples
    --------
    >>> stage_colors(2)
    ['#8fc1e3', '#08306b']
    """
    if n <= 0:
        return []
    lo, hi = (0x8F, 0xC1, 0xE3), (0x08, 0x30, 0x6B)
    out = []
    for i in range(n):
        t = 1.0 if n == 1 else i / (n - 1)
        rgb = (round(a + (b - a) * t) for a, b in zip(lo, hi))
        out.append("#" + "".join(f"{c:02x}" for c in rgb))
    return out


def _finite(x: object) -> bool:
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_count(n: object) -> str:
    """A count with thousands separators (``"–"`` when missing).

    Examples
    --------
    >>> fmt_count(12345), fmt_count(float("nan"))
    ('12,345', '–')
    """
    return f"{int(n):,}" if _finite(n) else "–"  # type: ignore[call-overload]


def fmt_pct(p: object, digits: int = 0) -> str:
    """A proportion (0–1) as a percentage.

    Examples
    --------
    >>> fmt_pct(0.1234), fmt_pct(0.1234, 1), fmt_pct(None)
    ('12%', '12.3%', '–')
    """
    return f"{float(p) * 100:.{digits}f}%" if _finite(p) else "–"  # type: ignore[arg-type]


def fmt_p(p: object) -> str:
    """A p-value for readers: ``<0.001`` or three decimals.

    Examples
    --------
    >>> fmt_p(9.5e-11), fmt_p(0.0621), fmt_p(float("nan"))
    ('<0.001', '0.062', '–')
    """
    if not _finite(p):
        return "–"
    v = float(p)  # type: ignore[arg-type]
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def fmt_days(d: object) -> str:
    """A duration in days, rounded sensibly.

    Examples
    --------
    >>> fmt_days(0.4), fmt_days(12.26), fmt_days(140.6)
    ('0.4 days', '12 days', '141 days')
    """
    if not _finite(d):
        return "–"
    v = float(d)  # type: ignore[arg-type]
    if v < 1:
        return f"{v:.1f} days"
    return f"{v:,.0f} day" + ("" if round(v) == 1 else "s")


def fmt_money(x: object, currency: str | None = None) -> str:
    """An amount, abbreviated (k, M, bn), with its currency code when known.

    Examples
    --------
    >>> fmt_money(1_234_567), fmt_money(15_300, "EUR"), fmt_money(950)
    ('1.23M', 'EUR 15.3k', '950')
    """
    if not _finite(x):
        return "–"
    v = float(x)  # type: ignore[arg-type]
    sign = "-" if v < 0 else ""
    v = abs(v)
    for scale, suffix in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            s = f"{v / scale:.3g}{suffix}"
            break
    else:
        s = f"{v:,.0f}"
    code = f"{currency} " if currency else ""
    return f"{code}{sign}{s}"


def fmt_date(ts: object) -> str:
    """A date as ``31 Dec 2024``.

    Examples
    --------
    >>> fmt_date(pd.Timestamp("2024-12-31", tz="UTC"))
    '31 Dec 2024'
    """
    if ts is None or ts is pd.NaT:
        return "–"
    t = pd.Timestamp(ts)  # type: ignore[arg-type]
    return f"{t.day} {t:%b %Y}"


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``.

    Examples
    --------
    >>> join_words(["a", "b", "c"])
    'a, b and c'
    """
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
