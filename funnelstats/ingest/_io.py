"""Reading export files into string tables: formats, compression, encodings, delimiters."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import os
import zipfile
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import pandas as pd
import pyarrow as pa
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
    seen: dict[str, int] = {}
    out = []
    renamed = []
    for n in names:
        if n in seen:
            seen[n] += 1
            new = f"{n}.{seen[n]}"
            while new in seen:
                seen[n] += 1
                new = f"{n}.{seen[n]}"
            renamed.append(f"{n!r} -> {new!r}")
            seen[new] = 0
            out.append(new)
        else:
            seen[n] = 0
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
    first_line = text.split("\n", 1)[0].rstrip("\r")
    delim = delimiter or _sniff_delimiter(first_line)
    if delim != ",":
        notes.append(f"delimiter {delim!r}")
    header = next(csv.reader(io.StringIO(text), delimiter=delim))
    if not any(h.strip() for h in header):
        raise FunnelDataError("the file has no header row", file=name, rule="empty_file")
    names = _dedupe([h.strip() for h in header], notes)
    data = text.encode("utf-8")

    invalid: list[Any] = []

    def handler(row: Any) -> str:
        invalid.append(row)
        return "skip"

    frame = None
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=handler),
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
    if frame is None:  # quoted newlines, ragged rows: the exact but slower path
        frame, rows, malformed = _read_text_python(text, names, delim)
    if len(frame) == 0 and not malformed:
        raise FunnelDataError(
            "the file has a header but no data rows", file=name, rule="header_only"
        )
    return Table(frame, name, rows, malformed=malformed, notes=notes)


def _read_text_fast(
    path: Path, name: str, *, encoding: str | None, delimiter: str | None
) -> Table | None:
    """A large plain UTF-8 text file read by pyarrow straight from disk, or None.

    The general path reads the whole file into memory, decodes it, and hands
    the re-encoded text to pyarrow: three copies of the file. For the common
    case (an uncompressed UTF-8 file with no byte-order mark, a header line
    without quotes) pyarrow gets the very same bytes from the file itself, so
    the result is identical; pyarrow checks that every cell is valid UTF-8.
    Anything else (and any failure: invalid UTF-8, ragged rows, quoted
    newlines, no data rows) returns None and the general path decides.
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
        if not path.is_file() or path.stat().st_size < _FAST_MIN_BYTES:
            return None
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return None
    if (
        any(head.startswith(m) for m in _MAGIC)
        or head.startswith(_BOMS)
        or head[:4] == b"PAR1"
        or head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        or b"\n" not in head
    ):
        return None
    line = head.split(b"\n", 1)[0]
    if line.endswith(b"\r"):
        line = line[:-1]
    if b'"' in line or b"\r" in line or not line.strip():
        return None
    try:
        first_line = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    notes: list[str] = []
    delim = delimiter or _sniff_delimiter(first_line)
    if delim != ",":
        notes.append(f"delimiter {delim!r}")
    header = next(csv.reader(io.StringIO(first_line + "\n"), delimiter=delim))
    if not any(h.strip() for h in header):
        return None
    names = _dedupe([h.strip() for h in header], notes)
    invalid: list[Any] = []

    def handler(row: Any) -> str:
        invalid.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=_BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=handler),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException, OSError):
        return None
    if invalid or table.num_rows == 0:
        return None
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    # the parser's block buffers are free now: hand them back rather than keep them cached
    pa.default_memory_pool().release_unused()
    return Table(frame, name, np.arange(len(frame)) + 2, notes=notes)


def _read_text_python(
    text: str, names: list[str], delim: str
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[int, str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    next(reader)
    width = len(names)
    good: list[list[str]] = []
    rows: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    csv.field_size_limit(1 << 30)
    for i, rec in enumerate(reader):
        row = i + 2
        if not rec or (len(rec) == 1 and rec[0] == "" and width > 1):
            malformed.append((row, "", "empty line"))
            continue
        if len(rec) != width:
            malformed.append(
                (row, delim.join(rec)[:200], f"{len(rec)} fields where the header has {width}")
            )
            continue
        good.append(rec)
        rows.append(row)
    cols = list(zip(*good)) if good else [()] * width
    frame = pd.DataFrame(
        {n: pd.array(list(c), dtype="string[pyarrow]") for n, c in zip(names, cols)}
    )
    return frame, np.asarray(rows, dtype=np.int64), malformed


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
