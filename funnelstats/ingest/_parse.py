"""Vectorised parsing of timestamps and amounts, with per-row outcomes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._fastparse import decimal_amounts, factorize, iso_timestamps

NAT = np.iinfo(np.int64).min

# a zone needs a time of day before it: "2024-01-01" ends in "-01", which is not an offset
_ZONE_AFTER_TIME = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|z|[+-]\d{2}(?::?\d{2})?)"
_AWARE = _ZONE_AFTER_TIME + "$"
_SLASH = r"^\s*(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d{2})(?:[ T](.*))?\s*$"
_DIGITS = r"^\s*\d+(?:\.\d+)?\s*$"

#: Switch for tests that compare the fast path with the general one.
FAST_PATH = True


@dataclass
class ParsedTimes:
    """Result of :func:`parse_timestamps`: int64 ns UTC and per-row masks."""

    ns: np.ndarray
    missing: np.ndarray
    bad: np.ndarray
    naive: np.ndarray
    dst_ambiguous: np.ndarray
    dst_nonexistent: np.ndarray
    notes: list[str] = field(default_factory=list)
    ambiguous_format: str | None = None  # error text when d/m vs m/d cannot be decided
    ambiguous_example: int | None = None  # position of an example row


def _as_string_series(values: pd.Series) -> pd.Series:
    s = values
    if not (isinstance(s.dtype, pd.StringDtype)):
        s = s.astype("string[pyarrow]")
    return s.str.strip()


def _localize(naive_ns: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local wall-clock ns (no zone) -> UTC ns, with DST masks."""
    ok = naive_ns != NAT
    out = np.full(len(naive_ns), NAT, dtype=np.int64)
    amb = np.zeros(len(naive_ns), dtype=bool)
    gap = np.zeros(len(naive_ns), dtype=bool)
    if not ok.any():
        return out, amb, gap
    idx = pd.DatetimeIndex(naive_ns[ok].view("datetime64[ns]"))
    if tz.upper() == "UTC":
        out[ok] = naive_ns[ok]
        return out, amb, gap
    strict = idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    bad = strict.isna()
    if bad.any():
        sub = idx[bad]
        with_amb = sub.tz_localize(tz, ambiguous=np.ones(len(sub), dtype=bool), nonexistent="NaT")
        is_gap = with_amb.isna()
        shifted = sub.tz_localize(
            tz, ambiguous=np.ones(len(sub), dtype=bool), nonexistent="shift_forward"
        )
        fixed = strict.asi8.copy()
        fixed[np.flatnonzero(bad)] = shifted.asi8
        pos = np.flatnonzero(ok)
        amb[pos[np.flatnonzero(bad)[~is_gap]]] = True
        gap[pos[np.flatnonzero(bad)[is_gap]]] = True
        out[ok] = fixed
    else:
        out[ok] = strict.asi8
    return out, amb, gap


def parse_timestamps(
    values: pd.Series, *, tz: str = "UTC", dayfirst: bool | None = None
) -> ParsedTimes:
    """Parse a column of timestamps to UTC nanoseconds.

    Strings in ISO 8601 (with ``T`` or a space, optional fraction, ``Z`` or an
    offset), dates alone, and day/month/year with slashes (``dayfirst=`` decides;
    without it the order is taken only when some value makes it certain) are
    read. Values with a zone are converted to UTC; values without one are taken
    in ``tz``. Datetime columns are used as they are.
    """
    n = len(values)
    z = np.zeros(n, dtype=bool)
    notes: list[str] = []
    values = values.reset_index(drop=True)
    dt = values.dtype
    if isinstance(dt, pd.DatetimeTZDtype):
        ns = (
            values.dt.tz_convert("UTC")
            .dt.tz_localize(None)
            .to_numpy("datetime64[ns]")
            .view(np.int64)
        )
        miss = ns == NAT
        return ParsedTimes(ns.copy(), miss, z.copy(), z.copy(), z.copy(), z.copy(), notes)
    if pd.api.types.is_datetime64_dtype(dt):
        local = values.to_numpy("datetime64[ns]").view(np.int64)
        miss = local == NAT
        ns, amb, gap = _localize(local, tz)
        return ParsedTimes(ns, miss, z.copy(), ~miss, amb, gap, notes)
    if pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt):
        return _parse_numeric(values.astype("float64").to_numpy(), tz, notes)

    if FAST_PATH:
        few = _parse_distinct(values, tz, dayfirst)
        if few is not None:
            return few
        fast = _parse_fast(values, tz, dayfirst)
        if fast is not None:
            return fast
    return _parse_strings(values, tz, dayfirst)


_SAMPLE_ROWS = 20_000
_FEW = 0.05  # at most this share of distinct values: parse each distinct value once


def _parse_distinct(values: pd.Series, tz: str, dayfirst: bool | None) -> ParsedTimes | None:
    """Columns with few distinct values (dates): each distinct value parsed once.

    None when the column has many distinct values (judged on its first rows),
    or when its values are numbers (whose unit is decided on all rows).
    Every decision of the general path depends on which values occur, not on
    how often, and the distinct values keep the order of their first rows.
    """
    arr = _arrow_strings(values)
    n = len(values)
    if arr is None or n < 2 * _SAMPLE_ROWS:
        return None
    head = arr.slice(0, _SAMPLE_ROWS)
    if pc.count_distinct(head).as_py() > _FEW * _SAMPLE_ROWS:
        return None
    codes, uniques = factorize(values.reset_index(drop=True))
    if len(uniques) > _FEW * n:
        return None
    distinct = pd.Series(uniques)
    stripped = distinct.str.strip()
    if stripped[stripped != ""].str.match(_DIGITS).all():
        return None
    sub = parse_timestamps(distinct, tz=tz, dayfirst=dayfirst)
    known = codes >= 0
    every = bool(known.all())  # no missing values: the codes index the parses directly
    at = codes if every else np.where(known, codes, 0)

    def spread(mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return np.zeros(n, dtype=bool)
        return mask[at] if every else np.where(known, mask[at], False)

    if not len(uniques):
        ns = np.full(n, NAT, dtype=np.int64)
    else:
        ns = sub.ns[at] if every else np.where(known, sub.ns[at], NAT)
    out = ParsedTimes(
        ns,
        spread(sub.missing) | ~known,
        spread(sub.bad),
        spread(sub.naive),
        spread(sub.dst_ambiguous),
        spread(sub.dst_nonexistent),
        list(sub.notes),
        sub.ambiguous_format,
    )
    if sub.ambiguous_example is not None:
        out.ambiguous_example = int(np.argmax(codes == sub.ambiguous_example))
    return out


def _parse_strings(
    values: pd.Series, tz: str, dayfirst: bool | None, *, numbers: bool = True
) -> ParsedTimes:
    """The general path for text: ``numbers=False`` when other rows are not numbers."""
    n = len(values)
    z = np.zeros(n, dtype=bool)
    notes: list[str] = []
    s = _as_string_series(values)
    miss = (s.isna() | (s == "")).to_numpy(dtype=bool, na_value=True)
    ns = np.full(n, NAT, dtype=np.int64)
    naive = np.zeros(n, dtype=bool)
    amb = np.zeros(n, dtype=bool)
    gap = np.zeros(n, dtype=bool)
    present = ~miss
    if not present.any():
        return ParsedTimes(ns, miss, z.copy(), naive, amb, gap, notes)

    # numbers written as text: epoch seconds / milliseconds or Excel serials
    digits = s.str.match(_DIGITS).to_numpy(dtype=bool, na_value=False)
    if numbers and digits[present].all():
        return _parse_numeric(
            pd.to_numeric(s, errors="coerce").to_numpy("float64", na_value=np.nan), tz, notes
        )

    slash = s.str.match(_SLASH).to_numpy(dtype=bool, na_value=False)
    result = ParsedTimes(ns, miss, np.zeros(n, dtype=bool), naive, amb, gap, notes)
    if slash.any():
        parts = s[slash].str.extract(_SLASH)
        a = pd.to_numeric(parts[0]).to_numpy()
        b = pd.to_numeric(parts[1]).to_numpy()
        y = parts[2].astype(str)
        y = np.where(y.str.len() == 2, "20" + y, y)
        if dayfirst is None:
            day_first_certain = (a > 12).any()
            month_first_certain = (b > 12).any()
            if day_first_certain and not month_first_certain:
                dayfirst = True
                notes.append("dates with slashes read day-first (some days are above 12)")
            elif month_first_certain and not day_first_certain:
                dayfirst = False
                notes.append("dates with slashes read month-first (some days are above 12)")
            else:
                result.ambiguous_format = (
                    "dates like "
                    f"{s[slash].iloc[0]!r} could be day/month or month/day; pass dayfirst=True "
                    "or dayfirst=False"
                    if not (day_first_certain and month_first_certain)
                    else "dates with slashes are day-first in some rows and month-first in others"
                )
                result.ambiguous_example = int(np.flatnonzero(slash)[0])
                dayfirst = True  # parsed anyway; the caller raises
        day, month = (a, b) if dayfirst else (b, a)
        rest = _twelve_hour(parts[3].fillna("").astype(str).str.strip())
        iso = (
            pd.Series(y, dtype=str)
            + "-"
            + pd.Series(month).astype(int).astype(str).str.zfill(2)
            + "-"
            + pd.Series(day).astype(int).astype(str).str.zfill(2)
            + np.where(rest.to_numpy() == "", "", " " + rest.to_numpy())
        )
        sub = _parse_iso(pd.Series(iso.to_numpy(), dtype="string[pyarrow]"), tz)
        _put(result, np.flatnonzero(slash), sub)
    other = present & ~slash
    if other.any():
        sub = _parse_iso(s[other].reset_index(drop=True), tz)
        _put(result, np.flatnonzero(other), sub)
    return result


_AM_PM = r"^(\d{1,2})(:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*([AaPp])\.?\s*[Mm]\.?$"


def _twelve_hour(rest: pd.Series) -> pd.Series:
    """Times of day like ``9:05 PM`` (US spreadsheets) as ``21:05``; others unchanged."""
    parts = rest.str.extract(_AM_PM)
    has = parts[0].notna().to_numpy()
    if not has.any():
        return rest
    hour = pd.to_numeric(parts[0]).to_numpy()
    pm = (parts[2].str.lower() == "p").to_numpy()
    ok = has & (hour >= 1) & (hour <= 12)
    h24 = np.where(pm, hour % 12 + 12, hour % 12)
    out = rest.to_numpy(dtype=object).copy()
    out[ok] = [f"{int(h):02d}{m}" for h, m in zip(h24[ok], parts[1].to_numpy()[ok])]
    return pd.Series(out, index=rest.index, dtype=object)


def _arrow_strings(values: pd.Series) -> pa.ChunkedArray | None:
    """The values as an arrow string array when they are text already, else None."""
    dt = values.dtype
    if isinstance(dt, pd.StringDtype) and dt.storage in ("pyarrow", "pyarrow_numpy"):
        arr = values.array._pa_array  # type: ignore[attr-defined]
    elif isinstance(dt, pd.ArrowDtype) and pa.types.is_string(dt.pyarrow_dtype):
        arr = values.array._pa_array  # type: ignore[attr-defined]
    else:
        return None
    if not isinstance(arr, pa.ChunkedArray):
        arr = pa.chunked_array([arr])
    if arr.type not in (pa.string(), pa.large_string()):
        arr = arr.cast(pa.large_string())
    return arr


def _parse_fast(values: pd.Series, tz: str, dayfirst: bool | None) -> ParsedTimes | None:
    """Rows in the common ISO shapes read from their bytes; the others by the general path.

    None when no row has such a shape. The result equals the general path's:
    the shapes are read as pandas reads them (tested on tricky inputs), and the
    general path sees the other rows as it would have (never as a column of
    numbers, since some rows are dates).
    """
    arr = _arrow_strings(values)
    if arr is None or len(arr) == 0:
        return None
    got = iso_timestamps(arr)
    if got is None or not got[0].any():
        return None
    done, ns, naive = got
    n = len(arr)
    if not done.all():
        ns = np.where(done, ns, NAT)
        naive &= done
    z = np.zeros(n, dtype=bool)
    amb, gap = z.copy(), z.copy()
    if naive.any() and tz.upper() != "UTC":
        utc_ns, amb, gap = _localize(np.where(naive, ns, NAT), tz)
        ns = np.where(naive, utc_ns, ns)
    result = ParsedTimes(ns, z.copy(), z.copy(), naive, amb, gap, [])
    if not done.all():
        pos = np.flatnonzero(~done)
        sub_values = values.reset_index(drop=True).iloc[pos].reset_index(drop=True)
        sub = _parse_strings(sub_values, tz, dayfirst, numbers=False)
        result.missing[pos] = sub.missing
        _put(result, pos, sub)
        result.ambiguous_format = sub.ambiguous_format
        if sub.ambiguous_example is not None:
            result.ambiguous_example = int(pos[sub.ambiguous_example])
    return result


def _put(into: ParsedTimes, pos: np.ndarray, sub: ParsedTimes) -> None:
    into.ns[pos] = sub.ns
    into.bad[pos] = sub.bad
    into.naive[pos] = sub.naive
    into.dst_ambiguous[pos] = sub.dst_ambiguous
    into.dst_nonexistent[pos] = sub.dst_nonexistent
    into.notes.extend(sub.notes)


def _parse_iso(s: pd.Series, tz: str) -> ParsedTimes:
    """ISO-8601-like strings, none missing."""
    n = len(s)
    ns = np.full(n, NAT, dtype=np.int64)
    aware = s.str.contains(_AWARE).to_numpy(dtype=bool, na_value=False)
    naive = ~aware
    amb = np.zeros(n, dtype=bool)
    gap = np.zeros(n, dtype=bool)
    if aware.any():
        parsed = _to_datetime(s[aware], utc=True)
        ns[aware] = parsed
    # A zone followed by more text is no timestamp; such a value is kept away from pandas,
    # whose ISO parser would carry its offset over to the naive values after it.
    naive &= ~s.str.contains(_ZONE_AFTER_TIME).to_numpy(dtype=bool, na_value=False)
    if naive.any():
        local = _to_datetime(s[naive], utc=False)
        utc, a, g = _localize(local, tz)
        ns[naive] = utc
        amb[naive] = a
        gap[naive] = g
    bad = ns == NAT
    return ParsedTimes(ns, np.zeros(n, bool), bad, ~aware & ~bad, amb, gap, [])


def _to_datetime(s: pd.Series, *, utc: bool) -> np.ndarray:
    out = pd.to_datetime(s, format="ISO8601", errors="coerce", utc=utc)
    if utc:
        out = out.dt.tz_localize(None)
    elif isinstance(out.dtype, pd.DatetimeTZDtype):  # pragma: no cover - defensive
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out.to_numpy("datetime64[ns]").view(np.int64)


def _parse_numeric(x: np.ndarray, tz: str, notes: list[str]) -> ParsedTimes:
    """Numbers as timestamps: epoch ms / s, or Excel serial days."""
    n = len(x)
    miss = np.isnan(x)
    ok = ~miss
    ns = np.full(n, NAT, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    naive = np.zeros(n, dtype=bool)
    z = np.zeros(n, dtype=bool)
    if not ok.any():
        return ParsedTimes(ns, miss, bad, naive, z, z.copy(), notes)
    med = float(np.median(x[ok]))
    if 1e11 <= med < 1e14:
        unit, what = 1e6, "epoch milliseconds (UTC)"
        ns[ok] = np.round(x[ok] * unit).astype(np.int64)
    elif 1e8 <= med < 1e11:
        unit, what = 1e9, "epoch seconds (UTC)"
        ns[ok] = np.round(x[ok] * unit).astype(np.int64)
    elif 1e14 <= med < 1e17:
        unit, what = 1e3, "epoch microseconds (UTC)"
        ns[ok] = np.round(x[ok] * unit).astype(np.int64)
    elif 1e17 <= med < 1e19:
        what = "epoch nanoseconds (UTC)"
        ns[ok] = x[ok].astype(np.int64)
    elif 20000 <= med < 80000:
        what = f"Excel serial day numbers (local time in {tz})"
        base = np.datetime64("1899-12-30", "ns").view(np.int64)
        local = base + np.round(x[ok] * 86_400e9).astype(np.int64)
        full = np.full(n, NAT, dtype=np.int64)
        full[ok] = local
        utc, amb, gap = _localize(full, tz)
        notes.append(f"numeric timestamps read as {what}")
        return ParsedTimes(utc, miss, bad, ok.copy(), amb, gap, notes)
    else:
        bad[ok] = True
        return ParsedTimes(ns, miss, bad, naive, z, z.copy(), notes)
    notes.append(f"numeric timestamps read as {what}")
    return ParsedTimes(ns, miss, bad, naive, z, z.copy(), notes)


# ---------------------------------------------------------------------------
# amounts

_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")
# a currency mark: symbols ($, €, US$), or a code or abbreviation of at most three letters
# (EUR, CHF, Rs., kr, zł); longer words ("12 days") and formulas ("@SUM(A1)") are no amounts
_SYMBOLS = "$€£¥₹₽₩¢₺₫₪₦₱฿₴₸₼₾₡₲₵₭₮₨"
_LETTER = r"[^\W\d_]"
_MARK = rf"(?:[{_SYMBOLS}]+|(?<!{_LETTER}){_LETTER}{{1,3}}(?!{_LETTER})\.?\s*[{_SYMBOLS}]*)"
_LEAD = re.compile(rf"^{_MARK}\s*")  # before the number
_TRAIL = re.compile(rf"\s*{_MARK}$")  # ... and after it
_NUMERIC_TEXT = re.compile(r"[\d.,]+")
# evidence of the decimal separator a column is written with
_DECIMAL_COMMA = r"\d,\d{1,2}(?:$|[^\d,.])|\.\d{3},\d"  # 99,90 / 1.234,5
_DECIMAL_POINT = r"\d\.(?:\d{1,2}|\d{4,})(?:$|[^\d,.])|,\d{3}\.\d"  # 99.90 / 1,234.5


@dataclass
class ParsedAmounts:
    """Result of :func:`parse_amounts`."""

    values: np.ndarray
    missing: np.ndarray
    text: np.ndarray
    not_numeric: np.ndarray
    negative: np.ndarray
    not_finite: np.ndarray
    notes: list[str] = field(default_factory=list)


def parse_amounts(values: pd.Series) -> ParsedAmounts:
    """Parse a column of amounts to float64.

    Numbers are used as they are; text such as ``$1,234.50``, ``1.234,50 €``,
    ``USD 1 234`` or ``(500)`` is read as a number (and flagged); anything else
    becomes NaN (flagged). Negative and infinite amounts become NaN (flagged).
    """
    n = len(values)
    values = values.reset_index(drop=True)
    text = np.zeros(n, dtype=bool)
    not_numeric = np.zeros(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        x = (
            values.astype("float64").to_numpy(na_value=np.nan)
            if hasattr(values, "array")
            else values
        )
        x = np.asarray(x, dtype=np.float64).copy()
        missing = np.isnan(x)
        notes: list[str] = []
    else:
        x, missing, text, not_numeric = _amount_strings(values)
        # the column's decimal convention is decided on every value, however each was read
        notes = _decimal_convention(values, x, missing, text, not_numeric)
    not_finite = np.isinf(x)
    x[not_finite] = np.nan
    negative = x < 0
    x[negative] = np.nan
    return ParsedAmounts(x, missing, text, not_numeric, negative, not_finite, notes)


def _decimal_convention(
    values: pd.Series,
    x: np.ndarray,
    missing: np.ndarray,
    text: np.ndarray,
    not_numeric: np.ndarray,
) -> list[str]:
    """Read a column written with decimal commas (``1.234,50``) as one convention.

    Each value read on its own takes ``2.500`` as 2.5; in a column whose other
    values show decimal commas (``99,90``, ``1.234,50``) and none show decimal
    points, it means 2500. Such values are read again (in place) and flagged as
    text. A column showing both conventions is read value by value, and said so.
    """
    if not (text.any() or not_numeric.any()):
        return []  # plain numbers only: nothing to decide
    s = _as_string_series(values)
    comma = s.str.contains(_DECIMAL_COMMA).to_numpy(dtype=bool, na_value=False)
    if not comma.any():
        return []
    point = s.str.contains(_DECIMAL_POINT).to_numpy(dtype=bool, na_value=False)
    if point.any():
        return [
            "amounts written with decimal commas (1.234,50) and decimal points (1,234.50) in one "
            "column; each value read on its own"
        ]
    separated = s.str.contains(r"\d[.,]\d").to_numpy(dtype=bool, na_value=False) & ~missing
    pos = np.flatnonzero(separated)
    sub = s.iloc[pos]
    # the plain shape (-1.234,50) at once; currency marks and signs value by value
    plain = sub.str.fullmatch(r"-?\d{1,3}(?:\.\d{3})*(?:,\d+)?|-?\d+(?:,\d+)?").to_numpy(
        dtype=bool, na_value=False
    )
    again = np.full(len(pos), np.nan)
    again[plain] = pd.to_numeric(
        sub[plain].str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    ).to_numpy(dtype=np.float64)
    again[~plain] = [_clean_amount(str(v), decimal=",") for v in sub[~plain]]
    ok = ~np.isnan(again)
    changed = pos[ok][~(again[ok] == x[pos[ok]])]
    x[pos[ok]] = again[ok]
    text[changed] = True
    not_numeric[pos[ok]] = False
    return ["amounts read with decimal commas (1.234,50): 2.500 is 2500, 2,5 is 2.5"]


def _amount_strings(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Text amounts: plain decimals read from their bytes, the rest by the general path."""
    arr = _arrow_strings(values) if FAST_PATH else None
    got = decimal_amounts(arr) if arr is not None and len(arr) else None
    if got is None or not got[0].any():
        return _amount_strings_general(values)
    done, x = got
    n = len(values)
    missing = np.zeros(n, dtype=bool)
    text = np.zeros(n, dtype=bool)
    not_numeric = np.zeros(n, dtype=bool)
    if not done.all():
        pos = np.flatnonzero(~done)
        sub = _amount_strings_general(values.iloc[pos].reset_index(drop=True))
        x[pos], missing[pos], text[pos], not_numeric[pos] = sub
    return x, missing, text, not_numeric


def _amount_strings_general(
    values: pd.Series,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(values)
    text = np.zeros(n, dtype=bool)
    not_numeric = np.zeros(n, dtype=bool)
    s = _as_string_series(values)
    missing = (s.isna() | (s == "")).to_numpy(dtype=bool, na_value=True)
    num = pd.to_numeric(s.where(~pd.Series(missing)), errors="coerce")
    x = num.astype("float64").to_numpy(na_value=np.nan).copy()
    failed = np.isnan(x) & ~missing
    # "nan" / "NaN" text parses to NaN: that is a missing amount, not a failure
    lower = s.str.lower()
    nan_text = lower.isin(["nan", "null", "none", "n/a", "na", "-"]).to_numpy(
        dtype=bool, na_value=False
    )
    missing |= nan_text
    failed &= ~nan_text
    if failed.any():
        pos = np.flatnonzero(failed)
        cleaned = np.array([_clean_amount(str(v)) for v in s.iloc[pos]], dtype=np.float64)
        ok = ~np.isnan(cleaned)
        x[pos[ok]] = cleaned[ok]
        text[pos[ok & np.isfinite(cleaned)]] = True  # 1e309 is a number, too large
        not_numeric[pos[~ok]] = True
    return x, missing, text, not_numeric


def _clean_amount(v: str, decimal: str | None = None) -> float:
    """Read an amount written as text; NaN when it is not clearly a number.

    ``decimal=","`` reads every comma as the decimal mark and every point as a
    thousands separator (the column's convention, see :func:`_decimal_convention`).
    """
    t = v.strip().replace("\u2212", "-").replace("\u00a0", " ").replace("\u202f", " ")
    if _SCIENTIFIC.fullmatch(t):
        return float(t)
    neg = False
    for _ in range(3):  # peel signs, parentheses and currency marks from both ends
        t = _LEAD.sub("", _TRAIL.sub("", t)).strip()
        if t.startswith("(") and t.endswith(")"):
            neg, t = not neg, t[1:-1]
        elif t.startswith("-"):
            neg, t = not neg, t[1:]
        elif t.startswith("+"):
            t = t[1:]
        elif t.endswith("-"):  # 500- (trailing minus)
            neg, t = not neg, t[:-1]
    t = t.replace(" ", "").replace("'", "")
    if not t or not _NUMERIC_TEXT.fullmatch(t):
        return np.nan
    if decimal == ",":
        if not re.fullmatch(r"\d{1,3}(\.\d{3})*(,\d+)?|\d+(,\d+)?", t):
            return np.nan
        out = float(t.replace(".", "").replace(",", "."))
        return -out if neg else out
    if re.fullmatch(r"\d{1,3}(\.\d{3})+(,\d+)?|\d+,\d{1,2}", t):
        t = t.replace(".", "").replace(",", ".")  # 1.234,50 (decimal comma)
    elif re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?|\d{1,2}(,\d{2})+,\d{3}(\.\d+)?", t):
        t = t.replace(",", "")  # 1,234.50 and 12,34,567.50 (Indian grouping)
    try:
        out = float(t)
    except ValueError:
        return np.nan
    return -out if neg else out
