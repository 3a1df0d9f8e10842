"""Reading export files into string tables: formats, compression, encodings, delimiters."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import mmap
import os
import re
import zipfile
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import FunnelDataError

Source = Union[str, "PathLike[str]", pd.DataFrame, IO[bytes], bytes]

_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
    b"(\xb5/\xfd": "zstd",
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "rar",
}
_TEXT_SUFFIXES = {".csv", ".txt", ".tsv", ".tab", ".dat", ""}
_EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_COMPRESSION_SUFFIXES = {".gz", ".gzip", ".zip", ".bz2", ".xz", ".zst", ".7z", ".rar", ".z"}
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# Plain UTF-8 text files at least this large are handed to pyarrow by path (see _read_text_fast)
_FAST_MIN_BYTES = 1 << 20
_HEAD_BYTES = 1 << 16
_BLOCK_SIZE = 1 << 22
_SCAN_BYTES = 1 << 24  # quotes are counted in blocks this long


@dataclass
class Table:
    """A table read from a source, with where each row came from."""

    frame: pd.DataFrame
    name: str
    rows: np.ndarray  # row number per frame row (file: header = 1; DataFrame: position)
    row_word: str = "row"
    malformed: list[tuple[int, str, str]] = field(default_factory=list)  # (row, text, reason)
    notes: list[str] = field(default_factory=list)

    def error(
        self,
        message: str,
        *,
        position: int | None = None,
        column: str | None = None,
        rule: str | None = None,
    ) -> FunnelDataError:
        row = int(self.rows[position]) if position is not None else None
        return FunnelDataError(
            message, file=self.name, row=row, column=column, rule=rule, row_word=self.row_word
        )


def source_name(source: Any) -> str:
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<buffer>"


def read_table(
    source: Source,
    *,
    encoding: str | None = None,
    sheet_name: str | int | None = None,
    delimiter: str | None = None,
) -> Table:
    """Read a CSV / TSV / Parquet / XLSX file (optionally compressed) or a DataFrame.

    Text formats are read with every column as strings, so ids keep their
    leading zeros and nothing is converted behind the caller's back.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        if frame.columns.duplicated().any():
            dup = sorted(set(frame.columns[frame.columns.duplicated()].astype(str)))
            raise FunnelDataError(
                f"duplicate column names {dup}", file="<DataFrame>", rule="missing_column"
            )
        return Table(frame, "<DataFrame>", np.arange(len(frame)), row_word="position")

    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        fast = _read_text_fast(Path(source), name, encoding=encoding, delimiter=delimiter)
        if fast is not None:
            return fast
    raw, suffix = _read_bytes(source, name)
    notes: list[str] = []
    raw, suffix, inner = _decompress(raw, suffix, name)
    if inner:
        notes.append(inner)
    if suffix in _PARQUET_SUFFIXES or raw[:4] == b"PAR1":
        return _read_parquet(raw, name, notes)
    if (
        suffix in _EXCEL_SUFFIXES
        or raw[:4] == b"PK\x03\x04"
        or raw[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    ):
        return _read_excel(raw, name, notes, sheet_name)
    if suffix == ".json":
        raise FunnelDataError(
            "JSON input is read by the adapters that expect it (read_hubspot); "
            "read_events takes CSV, Parquet or XLSX",
            file=name,
            rule="unsupported_input",
        )
    return _read_text(raw, name, notes, encoding=encoding, delimiter=delimiter)


def _read_bytes(source: Any, name: str) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), ""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FunnelDataError("file not found", file=name) from None
        except IsADirectoryError:
            raise FunnelDataError("is a directory, not a file", file=name) from None
        except PermissionError:
            raise FunnelDataError("permission denied", file=name) from None
        return data, path.suffix.lower()
    if hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return data, Path(name).suffix.lower() if name != "<buffer>" else ""
    raise TypeError(f"cannot read from {type(source).__name__}; give a path, a file or a DataFrame")


def _decompress(raw: bytes, suffix: str, name: str) -> tuple[bytes, str, str | None]:
    kind = next((k for m, k in _MAGIC.items() if raw.startswith(m)), None)
    inner_suffix = (
        Path(Path(name).stem).suffix.lower() if suffix in _COMPRESSION_SUFFIXES else suffix
    )
    try:
        if kind == "gzip":
            return gzip.decompress(raw), inner_suffix, "read from a gzip file"
        if kind == "bz2":
            return bz2.decompress(raw), inner_suffix, "read from a bz2 file"
        if kind == "xz":
            return lzma.decompress(raw), inner_suffix, "read from an xz file"
        if kind == "zip" and suffix not in _EXCEL_SUFFIXES:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if zf.namelist() and "[Content_Types].xml" in zf.namelist():
                    return raw, ".xlsx", None  # an xlsx file without its suffix
                if len(members) != 1:
                    names = [m.filename for m in members]
                    raise FunnelDataError(
                        f"a zip file must hold exactly one file; this one holds {names}",
                        file=name,
                        rule="unsupported_input",
                    )
                member = members[0]
                return (
                    zf.read(member),
                    Path(member.filename).suffix.lower(),
                    f"read {member.filename!r} from a zip file",
                )
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as exc:
        raise FunnelDataError(
            f"the compressed file is damaged ({exc})", file=name, rule="unsupported_input"
        ) from None
    if kind in ("zstd", "7z", "rar") or suffix in {".zst", ".7z", ".rar", ".z"}:
        label = kind or suffix.lstrip(".")
        raise FunnelDataError(
            f"{label} compression is not supported; decompress the file, or use gzip, bz2, "
            "xz or zip",
            file=name,
            rule="unsupported_input",
        )
    return raw, suffix, None


def _decode(raw: bytes, encoding: str | None, name: str, notes: list[str]) -> str:
    if encoding is not None:
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise FunnelDataError(
                f"cannot decode as {encoding}: {exc}", file=name, rule="unsupported_input"
            ) from None
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
        notes.append("decoded as UTF-16")
    elif (utf16 := _utf16_without_bom(raw)) is not None:
        text = raw.decode(utf16, errors="replace")
        notes.append(
            f"decoded as UTF-16 ({'little' if utf16.endswith('le') else 'big'}-endian, no "
            "byte-order mark). Pass encoding= to choose"
        )
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            try:
                text = raw.decode("cp1252")
                used = "Windows-1252"
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
                used = "Latin-1"
            notes.append(
                f"not valid UTF-8 (first bad byte at offset {exc.start}); decoded as {used}. "
                "Pass encoding= to choose"
            )
    if text.startswith("\ufeff"):
        text = text[1:]
        notes.append("UTF-8 byte-order mark removed")
    return text


def _utf16_without_bom(raw: bytes) -> str | None:
    """``"utf-16-le"`` / ``"utf-16-be"`` when text looks like UTF-16 written without a BOM."""
    head = raw[:4096]
    if len(head) < 8 or b"\x00" not in head:
        return None
    even, odd = head[0::2], head[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


_CONTROL = {chr(c) for c in range(32)} - {"\t", "\n", "\r"}


_BINARY_CHECK_CHARS = 4096


def _looks_binary(head: str) -> bool:
    """Whether the first characters of a text hold many control characters."""
    return sum(ch in _CONTROL for ch in head) > max(8, 0.05 * len(head))


def _check_text(text: str, raw: bytes, name: str) -> None:
    """Refuse binary data (an image, a PDF, an Excel file under another name)."""
    if _looks_binary(text[:_BINARY_CHECK_CHARS]):
        kind = next((k for m, k in _BINARY_MAGIC.items() if raw.startswith(m)), "binary data")
        raise FunnelDataError(
            f"this is {kind}, not a text table; funnelstats reads CSV, TSV, XLSX and "
            "Parquet (optionally gzip, bz2, xz or zip compressed)",
            file=name,
            rule="unsupported_input",
        )


_BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"SQLite format 3": "an SQLite database",
}


def _sniff_delimiter(header: str) -> str:
    counts = {d: 0 for d in (",", ";", "\t", "|")}
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _dedupe(names: list[str], notes: list[str]) -> list[str]:
    """Unique column names: a repeated name gets the first free ``.1``, ``.2``, ...

    A suffixed name is never one the header already has, so no column loses its name.
    """
    taken = set(names)
    used: set[str] = set()
    out = []
    renamed = []
    for n in names:
        if n in used:
            j = 1
            while f"{n}.{j}" in taken:
                j += 1
            new = f"{n}.{j}"
            taken.add(new)
            renamed.append(f"{n!r} -> {new!r}")
            used.add(new)
            out.append(new)
        else:
            used.add(n)
            out.append(n)
    if renamed:
        notes.append("duplicate column names renamed: " + ", ".join(renamed))
    return out


def _read_text(
    raw: bytes, name: str, notes: list[str], *, encoding: str | None, delimiter: str | None
) -> Table:
    if not raw.strip():
        raise FunnelDataError("the file is empty", file=name, rule="empty_file")
    text = _decode(raw, encoding, name, notes)
    if not text.strip():
        raise FunnelDataError("the file is empty", file=name, rule="empty_file")
    _check_text(text, raw, name)
    first_line = text.split("\n", 1)[0].rstrip("\r")
    sep = _SEP_LINE.fullmatch(first_line)
    if sep:  # Excel's "sep=;" hint line: it names the delimiter and is not the header
        delimiter = delimiter or sep.group(1)
        text = text.split("\n", 1)[1] if "\n" in text else ""
        first_line = text.split("\n", 1)[0].rstrip("\r")
        notes.append(f"first line {sep.group(0)!r} read as the delimiter (as Excel does)")
        if not text.strip():
            raise FunnelDataError("the file has no header row", file=name, rule="empty_file")
    delim = delimiter or _sniff_delimiter(first_line)
    if delim != ",":
        notes.append(f"delimiter {delim!r}")
    header = next(csv.reader(io.StringIO(text, newline=""), delimiter=delim), [])
    if not any(h.strip() for h in header):
        raise FunnelDataError("the file has no header row", file=name, rule="empty_file")
    names = _dedupe([h.strip() for h in header], notes)
    data = text.encode("utf-8")

    invalid: list[Any] = []

    def handler(row: Any) -> str:
        invalid.append(row)
        return "skip"

    frame = None
    # pyarrow skips blank lines (shifting the row numbers after them) and reads a quote that
    # is never closed to the end of the file (swallowing the rows after it): such files take
    # the exact path, which numbers rows as a spreadsheet does and sets the broken row aside
    quotes = text.count('"')
    exact = _has_blank_line(text) or quotes % 2 == 1
    try:
        if not exact:
            table = pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 24),
                parse_options=_parse_options(delim, handler, quotes=quotes > 0),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=False
                ),
            )
            if not invalid:
                frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
                rows = np.arange(len(frame)) + 2
                malformed: list[tuple[int, str, str]] = []
    except (pa.ArrowInvalid, pa.ArrowException):
        frame = None
    if frame is None:  # quoted newlines, ragged rows, blank lines, open quotes: the exact path
        frame, rows, malformed, blank = _read_text_python(text, names, delim)
        if blank:
            shown = ", ".join(map(str, blank[:5])) + (", ..." if len(blank) > 5 else "")
            notes.append(
                f"{len(blank)} blank line(s) skipped (row {shown}); rows are numbered as a "
                "spreadsheet shows them, blank lines included"
            )
    if len(frame) == 0 and not malformed:
        raise FunnelDataError(
            "the file has a header but no data rows", file=name, rule="header_only"
        )
    return Table(frame, name, rows, malformed=malformed, notes=notes)


_SEP_LINE = re.compile(r"\s*sep=(.)\s*")
_MAX_REREADS = 1000


def _has_blank_line(text: str) -> bool:
    """A blank line before the last record (blank lines at the very end shift nothing)."""
    body = text.rstrip("\r\n")
    # two line ends in a row (\n, \r\n or \r each): "\n\n", "\n\r" (also "\n\r\n") or "\r\r"
    return "\n\n" in body or "\n\r" in body or "\r\r" in body


def _read_text_fast(
    path: Path, name: str, *, encoding: str | None, delimiter: str | None
) -> Table | None:
    """A large plain UTF-8 text file read by pyarrow straight from disk, or None.

    The general path (:func:`_read_text`) reads the whole file into memory,
    decodes it, and hands the re-encoded text to pyarrow: three copies of the
    file. When that path would hand pyarrow the very bytes of the file, pyarrow
    reads them from the file itself, so the result is identical. That is the case
    for an uncompressed UTF-8 file (pyarrow checks that every cell is valid
    UTF-8; a UTF-8 byte-order mark and Excel's ``sep=`` line are skipped as the
    general path skips them) whose leading lines have no quotes, which the general
    path would not refuse as binary, and which has none of what sends the general
    path to its exact reader: a blank line before the last record, or a quote never
    closed (:func:`_scan_bytes`). Anything else, and any failure (invalid UTF-8,
    ragged rows, no data rows), returns None and the general path decides.
    """
    if path.suffix.lower() not in _TEXT_SUFFIXES:
        return None
    if encoding is not None:
        try:
            if codecs.lookup(encoding).name != "utf-8":
                return None
        except LookupError:
            return None
    try:
        if not path.is_file():
            return None
        size = path.stat().st_size
        if size < max(_FAST_MIN_BYTES, 1):
            return None
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            if (
                any(head.startswith(m) for m in _MAGIC)
                or head.startswith(_BOMS[1:])  # UTF-16
                or head[:4] == b"PAR1"
                or head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
                or (encoding is None and _utf16_without_bom(head) is not None)
            ):
                return None
            notes: list[str] = []
            start = 0
            if head.startswith(_BOMS[0]):
                start = len(_BOMS[0])
                notes.append("UTF-8 byte-order mark removed")
            lines = head[start:].split(b"\n", 2)
            first_line = _head_line(lines[0]) if len(lines) > 1 else None
            if first_line is None or _looks_binary(
                head[start:].decode("utf-8", errors="replace")[:_BINARY_CHECK_CHARS]
            ):
                return None
            skip = 1
            sep = _SEP_LINE.fullmatch(first_line)
            if sep:
                first_line = _head_line(lines[1]) if len(lines) > 2 else None
                if first_line is None:
                    return None
                delimiter = delimiter or sep.group(1)
                notes.append(f"first line {sep.group(0)!r} read as the delimiter (as Excel does)")
                skip = 2
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                quotes, blank, blank_at_end = _scan_bytes(mm, start)
    except (OSError, ValueError):
        return None
    if quotes % 2 or blank:
        return None  # an open quote or a blank line: the general path's exact reader
    delim = delimiter or _sniff_delimiter(first_line)
    if delim != ",":
        notes.append(f"delimiter {delim!r}")
    header = next(csv.reader(io.StringIO(first_line + "\n"), delimiter=delim))
    if not any(h.strip() for h in header):
        return None
    names = _dedupe([h.strip() for h in header], notes)
    # With quotes, a cell may hold a line break. pyarrow's reader cuts the file into blocks
    # at line breaks and refuses a block cut inside a cell; told that cells may hold line
    # breaks it cuts only between records, but slower. The quick way first, then that one.
    table = None
    for newlines in (False, True) if quotes else (False,):
        try:
            table = pacsv.read_csv(
                str(path),
                read_options=pacsv.ReadOptions(
                    column_names=names, skip_rows=skip, block_size=_BLOCK_SIZE
                ),
                # no handler for ragged rows: pyarrow raises at the first and the general
                # path decides; without quotes, blank lines are kept as rows of empty cells
                parse_options=_parse_options(
                    delim, None, quotes=newlines, ignore_empty_lines=quotes > 0
                ),
                # large_string: the storage of pandas' arrow strings, so the columns
                # become pandas columns without a copy of their offsets
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.large_string() for n in names}, strings_can_be_null=False
                ),
            )
            break
        except (pa.ArrowInvalid, pa.ArrowException, OSError):
            continue
    if table is None:
        return None
    if not quotes:
        empty = _empty_rows(table)
        n_rows = table.num_rows
        if len(empty):
            if len(empty) != blank_at_end or empty[0] != n_rows - len(empty):
                return None  # a blank line (or a row of empty cells) before the last record
            table = table.slice(0, n_rows - len(empty))
    if table.num_rows == 0:
        return None
    frame = table.to_pandas(types_mapper={pa.large_string(): pd.StringDtype("pyarrow")}.get)
    # the parser's block buffers are free now: hand them back rather than keep them cached
    pa.default_memory_pool().release_unused()
    return Table(frame, name, np.arange(len(frame)) + 2, notes=notes)


def _head_line(line: bytes) -> str | None:
    """A leading line (without its line end) as text, or None when the fast path must not
    read it: quotes (a header may span lines), a carriage return inside, invalid UTF-8."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if b'"' in line or b"\r" in line or not line.strip():
        return None
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _scan_bytes(mm: mmap.mmap, start: int) -> tuple[int, bool, int]:
    """The checks :func:`_read_text` makes on the decoded text, made on the file's bytes.

    Returns (quote characters, whether a blank line comes before the last record, blank
    lines after it). In UTF-8 no byte of a multi-byte character is a quote, CR or LF, so the
    bytes answer as the text does. Quotes are looked for with one ``memchr``; only a file
    with quotes is scanned further, in blocks with numpy: its quotes counted, and its blank
    lines looked for (a blank line inside a quoted cell sends the general path to its exact
    reader, too). Without quotes a blank line is a row of empty cells in pyarrow's result,
    which costs nothing to look for (``False`` is returned here; see :func:`_empty_rows`).
    """
    size = end = len(mm)
    while end > start:  # blank lines at the end shift nothing: find where they begin
        lo = max(start, end - _HEAD_BYTES)
        kept = mm[lo:end].rstrip(b"\r\n")
        end = lo + len(kept)
        if kept:
            break
    tail = mm[end:size]
    ends = tail.count(b"\n") + tail.count(b"\r") - tail.count(b"\r\n")
    blank_at_end = max(ends - 1, 0)
    if mm.find(b'"', start) < 0:
        return 0, False, blank_at_end
    cr = mm.find(b"\r", start, end) >= 0
    quotes, blank = _quotes_and_blank(np.frombuffer(mm, dtype=np.uint8), start, end, cr=cr)
    return quotes, blank, blank_at_end


def _quotes_and_blank(data: np.ndarray, start: int, end: int, *, cr: bool) -> tuple[int, bool]:
    """Quote characters from ``start`` on, and whether two line ends follow each other in
    ``data[start:end]`` (LF LF, LF CR or CR CR; CR LF is one line end), in blocks."""
    quotes, blank = 0, False
    for i in range(start, len(data), _SCAN_BYTES):
        quotes += int(np.count_nonzero(data[i : i + _SCAN_BYTES] == 0x22))
        if not blank and i < end:
            # the block reaches one byte into the next, so no pair is missed at the seams
            block = data[i : min(i + _SCAN_BYTES + 1, end)]
            lf = block == 0x0A
            pair = lf[:-1] & lf[1:]
            if cr:
                c = block == 0x0D
                pair |= (lf[:-1] | c[:-1]) & c[1:]
            blank = bool(pair.any())
    return quotes, blank


def _empty_rows(table: pa.Table) -> np.ndarray:
    """Positions of rows whose every cell is empty (how pyarrow keeps a blank line)."""
    if table.num_columns == 0 or table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    pos = _empty_cells(table.column(0))
    if len(pos) and table.num_columns > 1:
        rows = table.take(pa.array(pos))
        empty = np.ones(len(pos), dtype=bool)
        for col in rows.columns[1:]:
            empty &= pc.equal(pc.binary_length(col), 0).to_numpy(zero_copy_only=False)
        pos = pos[empty]
    return pos


def _empty_cells(col: pa.ChunkedArray) -> np.ndarray:
    """Positions of the empty strings in a string column, from its offsets (no copies)."""
    out, row = [], 0
    for chunk in col.chunks:
        n = len(chunk)
        if chunk.type not in (pa.string(), pa.large_string()) or chunk.null_count:
            lengths = pc.binary_length(chunk).fill_null(-1).to_numpy(zero_copy_only=False)
            out.append(np.flatnonzero(lengths == 0) + row)
        elif n:
            wide = chunk.type == pa.large_string()
            off = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if wide else np.int32)
            off = off[chunk.offset : chunk.offset + n + 1]
            out.append(np.flatnonzero(off[1:] == off[:-1]) + row)
        row += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _parse_options(
    delim: str, handler: Any, *, quotes: bool, ignore_empty_lines: bool = True
) -> pacsv.ParseOptions:
    """pyarrow's options; with quotes in the file, a cell may hold a line break.

    pyarrow's parser reads quoted line breaks either way, but without
    ``newlines_in_values`` its reader cuts the file into blocks at any line
    break and refuses a block cut inside a cell.
    """
    return pacsv.ParseOptions(
        delimiter=delim,
        invalid_row_handler=handler,
        newlines_in_values=quotes,
        ignore_empty_lines=ignore_empty_lines,
    )


def _read_text_python(
    text: str, names: list[str], delim: str
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[int, str, str]], list[int]]:
    """Every record with its row number (header = 1, as a spreadsheet counts).

    Records with a different number of fields are set aside as malformed; blank lines are
    skipped (and returned). A quote opened in a record and never closed would make the rest
    of the file one cell: that record (its first line) is set aside and the lines after it
    are read again as records.
    """
    lines = io.StringIO(text, newline="").readlines()
    width = len(names)
    good: list[list[str]] = []
    rows: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    blank: list[int] = []
    csv.field_size_limit(1 << 30)
    start_line, row = 1, 2  # after the header line; the first data row is row 2
    for _ in range(_MAX_REREADS):
        reader = csv.reader(lines[start_line:], delimiter=delim)
        record_start = 0
        last: tuple[int, int, int] | None = None  # (row, first line, position in good or -1)
        for rec in reader:
            first = start_line + record_start
            record_start = reader.line_num
            if not rec:
                blank.append(row)
                row += 1
                continue
            if len(rec) == 1 and rec[0] == "" and width > 1:
                blank.append(row)
            elif len(rec) != width:
                malformed.append(
                    (row, delim.join(rec)[:200], f"{len(rec)} fields where the header has {width}")
                )
                last = (row, first, -1)
            else:
                good.append(rec)
                rows.append(row)
                last = (row, first, len(good) - 1)
            row += 1
        if last is None or not _ends_in_open_quote(lines[last[1] :], delim):
            break
        # the last record runs to the end of the file inside a quote: set its first line aside
        bad_row, bad_line, at = last
        if at >= 0:
            good.pop()
            rows.pop()
        else:
            malformed.pop()
        swallowed = sum(1 for line in lines[bad_line + 1 :] if line.strip("\r\n"))  # not blank
        malformed.append(
            (
                bad_row,
                lines[bad_line].rstrip("\r\n")[:200],
                "a quote opened in this row is never closed"
                + (
                    f"; the {swallowed} line(s) after it are read as rows of their own"
                    if swallowed
                    else " (is the file cut short?)"
                ),
            )
        )
        start_line, row = bad_line + 1, bad_row + 1
        if start_line >= len(lines):
            break
    last_row = max([r for r, _, _ in malformed] + rows[-1:], default=0)
    blank = [b for b in blank if b < last_row]  # blank lines at the end are no rows
    cols = list(zip(*good)) if good else [()] * width
    frame = pd.DataFrame(
        {n: pd.array(list(c), dtype="string[pyarrow]") for n, c in zip(names, cols)}
    )
    return frame, np.asarray(rows, dtype=np.int64), malformed, blank


def _ends_in_open_quote(lines: list[str], delim: str) -> bool:
    """True when these lines (one record to the end of the file) leave a quote open."""
    try:
        for _ in csv.reader(lines, delimiter=delim, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _read_parquet(raw: bytes, name: str, notes: list[str]) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(raw))
    except (pa.ArrowInvalid, OSError) as exc:
        raise FunnelDataError(
            f"not a readable Parquet file ({exc})", file=name, rule="unsupported_input"
        ) from None
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    if len(frame) == 0:
        raise FunnelDataError(
            "the file has a header but no data rows", file=name, rule="header_only"
        )
    return Table(frame, name, np.arange(len(frame)) + 2, notes=notes)


def _read_excel(raw: bytes, name: str, notes: list[str], sheet_name: str | int | None) -> Table:
    try:
        import openpyxl  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise FunnelDataError(
            "reading XLSX needs openpyxl: pip install 'funnelstats[xlsx]'",
            file=name,
            rule="unsupported_input",
        ) from None
    try:
        frame = pd.read_excel(io.BytesIO(raw), sheet_name=sheet_name or 0, dtype=str)
    except ValueError as exc:
        raise FunnelDataError(
            f"cannot read the workbook ({exc})", file=name, rule="unsupported_input"
        ) from None
    frame.columns = _dedupe([str(c).strip() for c in frame.columns], notes)
    frame = frame.astype("string[pyarrow]")
    if len(frame) == 0:
        raise FunnelDataError(
            "the sheet has a header but no data rows", file=name, rule="header_only"
        )
    return Table(frame, name, np.arange(len(frame)) + 2, notes=notes)
