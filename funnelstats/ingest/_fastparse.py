"""Byte-level parsing of the common shapes of timestamps and amounts.

The general parsers in :mod:`._parse` go through pandas string methods, regular
expressions and ``pd.to_datetime`` / ``pd.to_numeric``: exact, but seconds per
million rows. Most exports write a column in one fixed shape
(``2024-01-01T03:01:54.000Z``, ``2024-01-01``, ``23000.0``). Here the bytes of
an arrow string array are viewed as a matrix, one row per value of a given
length, and each shape is checked and read with whole-column numpy arithmetic.

Only values that match a shape exactly, with every field in range, are read
here; everything else (spaces, other separators, 30 February, years outside
1700-2199, long numbers, signs, exponents) is left to the general parser. For
the values read here, the result is what the general parser gives (tested on
tricky inputs in ``tests/test_ingest_fast.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "decimal_amounts",
    "empty_values",
    "factorize",
    "iso_timestamps",
    "plain_ends",
    "printable_words",
    "select_rows",
    "take_rows",
]

_REFUSED_SLICE = 1 << 16  # when pyarrow refuses a column, it is retried in slices this long

# ISO shapes: date, optional time (hh:mm, hh:mm:ss, hh:mm:ss.f{1-9}), optional zone
_DATE = "dddd-dd-dd"
_TIMES = ("", "Tdd:dd", "Tdd:dd:dd", *("Tdd:dd:dd." + "d" * k for k in range(1, 10)))
_ZONES = ("Z", "+dd", "+dddd", "+dd:dd")


def _shapes() -> dict[int, list[tuple[str, int, str]]]:
    """Per length: (shape, length of the time part, zone) for every ISO shape."""
    out: dict[int, list[tuple[str, int, str]]] = {}
    for t in _TIMES:
        base = _DATE + t
        out.setdefault(len(base), []).append((base, len(t), ""))
        if t:
            for z in _ZONES:
                out.setdefault(len(base) + len(z), []).append((base + z, len(t), z))
    return out


_SHAPES = _shapes()


def _chunks(arr: pa.ChunkedArray | pa.Array) -> Iterator[tuple[int, np.ndarray, np.ndarray, Any]]:
    """Per chunk: (first row, starts, lengths with -1 for nulls, data bytes); no copies."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    row = 0
    for a in chunks:
        n = len(a)
        if n == 0:
            continue
        off_type = np.int32 if a.type == pa.string() else np.int64
        bufs = a.buffers()
        offsets = np.frombuffer(bufs[1], dtype=off_type)[a.offset : a.offset + n + 1]
        data = (
            np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        )
        lengths = np.diff(offsets)
        if a.null_count:
            valid = np.asarray(a.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            lengths = np.where(valid, lengths, -1)
        yield row, offsets[:-1], lengths, data
        row += n


def take_rows(values: pd.Series, pos: np.ndarray) -> pd.Series:
    """``values.iloc[pos]`` with a fresh index.

    pyarrow takes from a column of many chunks by first joining the chunks (a
    copy of the whole column); here each chunk gives its own rows.
    """
    arr = values.array
    ca = getattr(arr, "_pa_array", None)
    pos = np.asarray(pos, dtype=np.int64)
    if not isinstance(ca, pa.ChunkedArray) or ca.num_chunks < 2 or len(pos) == 0:
        return values.iloc[pos].reset_index(drop=True)
    if len(pos) and (pos.min() < 0 or pos.max() >= len(ca)):
        raise IndexError("positions out of bounds")
    order = np.argsort(pos, kind="stable")
    ordered = pos[order]
    bounds = np.cumsum([0] + [len(c) for c in ca.chunks])
    which = np.searchsorted(bounds, ordered, side="right") - 1
    cut = np.flatnonzero(np.r_[True, which[1:] != which[:-1], True])
    pieces = [
        ca.chunk(int(which[a])).take(pa.array(ordered[a:b] - bounds[which[a]]))
        for a, b in itertools.pairwise(cut)
    ]
    taken = pa.chunked_array(pieces, type=ca.type)
    if not (order[1:] > order[:-1]).all():
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        taken = taken.take(pa.array(back))
    return pd.Series(type(arr)(taken), name=values.name)


def select_rows(values: pd.Series, pos: np.ndarray) -> Any:
    """The array of ``values.iloc[pos]`` for increasing ``pos`` (no repeats).

    An arrow column is filtered chunk by chunk (no join of its chunks, no gather through
    an index); every row kept, the column's own array. Other columns: ``take``.
    """
    arr = values.array
    ca = getattr(arr, "_pa_array", None)
    pos = np.asarray(pos, dtype=np.int64)
    n = len(values)
    if not isinstance(ca, pa.ChunkedArray) or not len(pos):
        return arr.take(pos)
    if len(pos) > 1 and not (pos[1:] > pos[:-1]).all():
        raise ValueError("positions must increase")
    if pos[0] < 0 or pos[-1] >= n:
        raise IndexError("positions out of bounds")
    if len(pos) == n:
        return arr
    mask = np.zeros(n, dtype=bool)
    mask[pos] = True
    return type(arr)(ca.filter(pa.array(mask)))


def _plain(arr: pa.ChunkedArray | pa.Array) -> bool:
    return arr.type in (pa.string(), pa.large_string())


def plain_ends(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lengths in bytes, -1 for nulls; whether stripping spaces surely leaves the value as is).

    A value is surely unchanged by stripping when it is empty, or when its first
    and last bytes are printable ASCII other than a space. None when the array is
    not a plain string array.
    """
    if not _plain(arr):
        return None
    n = len(arr)
    all_lengths = np.empty(n, dtype=np.int64)
    clean = np.empty(n, dtype=bool)
    for row, starts, lengths, data in _chunks(arr):
        k = len(lengths)
        all_lengths[row : row + k] = lengths
        ok = clean[row : row + k]
        np.less_equal(lengths, 0, out=ok)
        if not len(data) or ok.all():
            continue
        # first and last byte of every value (empty values and nulls read a byte in bounds
        # and are clean anyway)
        top = len(data) - 1
        first = data[np.minimum(starts, top)]
        last = data[np.minimum(starts + np.maximum(lengths, 1) - 1, top)]
        first -= np.uint8(0x21)
        last -= np.uint8(0x21)
        ok |= (first <= 0x5D) & (last <= 0x5D)
    return all_lengths, clean


def printable_words(arr: pa.ChunkedArray) -> bool:
    """Whether every byte of the values is printable ASCII other than a space (0x21-0x7E).

    Such values have no spaces to strip, no invisible or control characters and no
    non-ASCII text; one pass over the bytes, chunk by chunk. False for arrays that are not
    plain string arrays.
    """
    if not _plain(arr):
        return False
    for _row, starts, lengths, data in _chunks(arr):
        if not len(data) or not len(starts):
            continue
        lo = int(starts[0])
        hi = int(starts[-1]) + max(int(lengths[-1]), 0)
        b = data[lo:hi] - np.uint8(0x21)  # bytes below 0x21 wrap round to large values
        if (b > 0x5D).any():
            return False
    return True


def factorize(values: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize(values, use_na_sentinel=True)`` for arrow strings without missing
    values, with int32 codes copied chunk by chunk (pandas joins the chunks and widens
    the codes to int64: two more copies of the column's codes).

    pyarrow encodes a column of many chunks with one table of distinct values, so every
    chunk carries the same dictionary (checked; pandas' own result otherwise).
    """
    arr = getattr(values.array, "_pa_array", None)
    if not isinstance(arr, pa.ChunkedArray) or arr.null_count or not len(arr):
        return pd.factorize(values, use_na_sentinel=True)
    encoded = arr.dictionary_encode()
    uniques = encoded.chunk(encoded.num_chunks - 1).dictionary
    if not all(c.dictionary.equals(uniques) for c in encoded.chunks):
        return pd.factorize(values, use_na_sentinel=True)
    codes = np.empty(len(arr), dtype=np.int32)
    row = 0
    for c in encoded.chunks:
        k = len(c)
        codes[row : row + k] = c.indices.to_numpy(zero_copy_only=False)
        row += k
    return codes, pd.Index(type(values.array)(uniques))


def empty_values(arr: pa.ChunkedArray) -> np.ndarray:
    """Which values are empty or missing (plain string arrays)."""
    out = np.empty(len(arr), dtype=bool)
    for row, _starts, lengths, _data in _chunks(arr):
        np.less_equal(lengths, 0, out=out[row : row + len(lengths)])
    return out


def _groups(arr: pa.ChunkedArray, wanted: set[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row positions, bytes matrix) per chunk and value length in ``wanted``."""
    top = max(wanted)
    for row, starts, lengths, data in _chunks(arr):
        n = len(lengths)
        counts = np.bincount(np.minimum(lengths, top + 1) + 1)
        for length in sorted(wanted):
            if length + 1 >= len(counts) or not counts[length + 1] or length > len(data):
                continue
            pos = np.arange(n) if counts[length + 1] == n else np.flatnonzero(lengths == length)
            st = starts[pos].astype(np.int64)
            # rows never overlap, so a span of exactly (k - 1) * length means back to back
            if len(st) > 1 and st[-1] - st[0] == (len(st) - 1) * length:
                m = data[st[0] : st[0] + len(st) * length].reshape(len(st), length)
            else:
                m = np.lib.stride_tricks.sliding_window_view(data, length)[st]
            yield pos + row, m


def _words(shape: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shape as 64-bit words, to check eight bytes at a time.

    A byte ``b`` fits when ``x = b ^ want`` is 0 for a fixed character, and
    0-9 for a digit (``want`` is "0"): ``x & high == 0`` and ``(x + 6) & 0x10 == 0``.
    """
    width = -(-len(shape) // 8) * 8
    want = np.zeros(width, dtype=np.uint8)
    high = np.full(width, 0xFF, dtype=np.uint8)
    six = np.zeros(width, dtype=np.uint8)
    ten = np.zeros(width, dtype=np.uint8)
    for j, c in enumerate(shape):
        if c == "d":
            want[j], high[j], six[j], ten[j] = 0x30, 0xF0, 0x06, 0x10
        else:
            want[j] = ord(c)
    return want.view(np.uint64), high.view(np.uint64), six.view(np.uint64), ten.view(np.uint64)


def _as_words(m: np.ndarray) -> np.ndarray:
    """The rows of a byte matrix as 64-bit words (zero-padded to a multiple of 8 bytes)."""
    k, length = m.shape
    width = -(-length // 8) * 8
    if width == length and m.flags.c_contiguous:
        return m.view(np.uint64)
    padded = np.zeros((k, width), dtype=np.uint8)
    padded[:, :length] = m
    return padded.view(np.uint64)


# Every shape spelled out: "T" is a "T" or a space, "+" is a plus or a minus
_VARIANTS: dict[int, list[tuple[str, int, str]]] = {}
for _length, _shapes_of in _SHAPES.items():
    for _shape, _t_len, _zone in _shapes_of:
        for _t in ("T", " ") if "T" in _shape else ("",):
            for _sign in ("+", "-") if "+" in _shape else ("",):
                _v = _shape.replace("T", _t) if _t else _shape
                _v = _v.replace("+", _sign) if _sign else _v
                _VARIANTS.setdefault(_length, []).append((_v, _t_len, _zone))
_WORDS = {v: _words(v) for vs in _VARIANTS.values() for v, _, _ in vs}
_SAMPLE = 64


_FIT_ROWS = 1 << 13  # rows checked at a time: the temporaries stay in the cache


def _tiled(shape: str, rows: int, tiles: dict[tuple[str, int], Any]) -> tuple[np.ndarray, ...]:
    """The words of ``shape`` repeated for ``rows`` rows (see :func:`_words`), kept in
    ``tiles`` (one parse's patterns) to be made once per shape and block size."""
    key = (shape, rows)
    if key not in tiles:
        tiles[key] = tuple(np.tile(p, rows) for p in _WORDS[shape])
    return tiles[key]


def _fits(w: np.ndarray, shape: str, tiles: dict[tuple[str, int], Any] | None = None) -> np.ndarray:
    """Which rows (as words, see :func:`_as_words`) have ``shape``."""
    k, width = w.shape
    rows = min(k, _FIT_ROWS)
    if not rows:
        return np.zeros(0, dtype=bool)
    # the pattern repeated for a block of rows: one long loop per operation, not one per row
    want, high, six, ten = _tiled(shape, rows, {} if tiles is None else tiles)
    out = np.empty(k, dtype=bool)
    for a in range(0, k, rows):
        block = w[a : a + rows].reshape(-1)
        m = len(block)
        x = block ^ want[:m]
        bad = x & high[:m]
        x += six[:m]
        x &= ten[:m]
        bad |= x
        bad = bad.reshape(-1, width)
        acc = bad[:, 0]
        for j in range(1, width):
            acc |= bad[:, j]
        np.equal(acc, 0, out=out[a : a + rows])
    return out


def _num(m: np.ndarray, a: int, b: int) -> np.ndarray:
    """The decimal number written in columns a..b-1 (digits already checked)."""
    out = np.zeros(len(m), dtype=np.int64)
    for j in range(a, b):
        out = out * 10 + (m[:, j].astype(np.int64) - 48)
    return out


def _cast(arr: pa.ChunkedArray, pos: np.ndarray, target: pa.DataType) -> tuple[np.ndarray, Any]:
    """Positions pyarrow cast, and the cast values (slices it refuses are left out)."""
    sub = arr if len(pos) == len(arr) else arr.take(pa.array(pos))
    try:
        return pos, pc.cast(sub, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    keep_pos, keep = [], []
    for start in range(0, len(pos), _REFUSED_SLICE):
        try:
            keep.append(pc.cast(sub.slice(start, _REFUSED_SLICE), target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        keep_pos.append(pos[start : start + _REFUSED_SLICE])
    if not keep_pos:
        return np.zeros(0, dtype=np.int64), pa.chunked_array([], type=target)
    return np.concatenate(keep_pos), pa.chunked_array(keep)


def _numpy(values: Any, dtype: Any) -> np.ndarray:
    """An arrow column as one new, writable numpy array (chunk by chunk, no joined copy)."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    out = np.empty(len(values), dtype=dtype)
    row = 0
    for c in chunks:
        out[row : row + len(c)] = c.to_numpy(zero_copy_only=False)
        row += len(c)
    return out


def _float64(values: Any) -> np.ndarray:
    return _numpy(values, np.float64)


def _int64(values: Any) -> np.ndarray:
    return _numpy(values.cast(pa.int64()), np.int64)


def iso_timestamps(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Read the values in the common ISO 8601 shapes.

    Returns ``(done, ns, naive)``: which rows were read, their nanoseconds
    (UTC for values with a zone, wall-clock for values without), and which
    rows had no zone. None when the array is not a plain string array.

    Each value's shape (and the year, 1700-2199, and offset, at most 14 hours)
    is checked here; pyarrow's cast then reads the values, refusing impossible
    dates such as 30 February (those slices are left to the general path).
    """
    if not _plain(arr):
        return None
    n = len(arr)
    shaped = np.zeros(n, dtype=bool)
    naive = np.zeros(n, dtype=bool)
    tiles: dict[tuple[str, int], Any] = {}
    for pos, m in _groups(arr, set(_VARIANTS)):
        w = _as_words(m)
        todo = np.ones(len(pos), dtype=bool)
        for shape, t_len, zone in _VARIANTS[m.shape[1]]:
            left = np.flatnonzero(todo)
            if not len(left):
                break
            step = max(1, len(left) // _SAMPLE)
            if not (
                _fits(w[left[:_SAMPLE]], shape, tiles).any()
                or _fits(w[left[::step]], shape, tiles).any()
            ):
                continue
            ok = _fits(w if len(left) == len(pos) else w[left], shape, tiles)
            if not ok.any():
                continue
            rows = left[ok]
            mm = m[rows] if len(rows) != len(pos) else m
            century = _num(mm, 0, 2)  # years 1700-2199
            good = (century >= 17) & (century <= 21)
            if zone and zone != "Z":
                z0 = 10 + t_len
                good &= _num(mm, z0 + 1, z0 + 3) <= 14
            if not good.all():
                rows = rows[good]
            todo[rows] = False
            at = pos[rows] if len(rows) != len(pos) else pos
            shaped[at] = True
            naive[at] = not zone
    done = np.zeros(n, dtype=bool)
    ns = np.zeros(n, dtype=np.int64)
    for mask, target in (
        (shaped & ~naive, pa.timestamp("ns", tz="UTC")),
        (shaped & naive, pa.timestamp("ns")),
    ):
        if mask.all():  # one shape family throughout: cast the column as it is
            try:
                ns = _int64(pc.cast(arr, target))
                done[:] = True
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        if mask.any():
            got, values = _cast(arr, np.flatnonzero(mask), target)
            ns[got] = _int64(values)
            done[got] = True
    return done, ns, naive & done


_MAX_DIGITS = 15  # below 2**53: every such decimal reads to its correctly rounded double


# per byte: 0 for a digit, 1 for a point, 16 for anything else
_DECIMAL_CLASS = np.full(256, 16, dtype=np.uint8)
_DECIMAL_CLASS[ord("0") : ord("9") + 1] = 0
_DECIMAL_CLASS[ord(".")] = 1


def _classes(b: np.ndarray, out: np.ndarray) -> None:
    """``_DECIMAL_CLASS[b]`` into ``out``, by whole-array arithmetic (a table lookup takes
    each byte on its own): 16 * (not a digit) - 15 * (a point)."""
    np.subtract(b, np.uint8(0x30), out=out)  # digits become 0-9, every other byte 10-255
    other = out > 9
    point = b == 0x2E
    np.left_shift(other.view(np.uint8), 4, out=out)
    out -= point.view(np.uint8) * np.uint8(15)


def _decimal_shape(starts: np.ndarray, lengths: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Which values of one chunk are plain decimals (see :func:`decimal_amounts`).

    Every byte is classed once; per value, the sum of its classes is the number of points
    plus 16 for every other byte, taken for all values at once (``np.add.reduceat`` over
    the offsets), and the first and last bytes must be digits.
    """
    k = len(lengths)
    ok = (lengths >= 1) & (lengths <= _MAX_DIGITS + 1)
    if not ok.any():
        return ok
    lo = int(starts[0])
    hi = int(starts[-1]) + max(int(lengths[-1]), 0)
    # one byte more than the values use, so that every start is a valid index
    cls = np.empty(hi - lo + 1, dtype=np.uint8)
    _classes(data[lo:hi], cls[:-1])
    cls[-1] = 16
    st = starts.astype(np.int64) - lo
    total = np.add.reduceat(cls, st, dtype=np.int64) if k else np.zeros(0, np.int64)
    # reduceat sums up to the next start: values are back to back in the buffer (a value's
    # bytes end where the next one's begin), and the last one runs to the added byte
    total[-1] -= 16
    ends = st + np.maximum(lengths, 1) - 1
    ok &= (total <= 1) & (cls[st] == 0) & (cls[ends] == 0)
    ok &= (lengths <= _MAX_DIGITS) | (total == 1)
    return ok


def decimal_amounts(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """Read plain decimals: digits, optionally one point with digits on both sides.

    At most 15 digits, no sign, no spaces, no exponent: the shape is checked
    here and pyarrow's cast reads the value (correctly rounded, as pandas
    reads such numbers). Returns ``(done, values)``; None when the array is not
    a plain string array.
    """
    if not _plain(arr):
        return None
    n = len(arr)
    shaped = np.zeros(n, dtype=bool)
    for row, starts, lengths, data in _chunks(arr):
        shaped[row : row + len(lengths)] = _decimal_shape(starts, lengths, data)
    if shaped.all():  # every value plain: cast the column as it is
        try:
            values = _float64(pc.cast(arr, pa.float64()))
            return shaped, values
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    values = np.zeros(n, dtype=np.float64)
    done = np.zeros(n, dtype=bool)
    if shaped.any():
        got, cast = _cast(arr, np.flatnonzero(shaped), pa.float64())
        values[got] = np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)
        done[got] = True
    return done, values
