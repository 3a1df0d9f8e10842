"""Writing output files safely: atomic replacement, paths kept inside a folder, no formulas.

Everything funnelstats writes goes through these helpers:

- :func:`atomic_write_bytes` / :func:`atomic_write_text` write to a temporary file in the
  target's folder, flush it to disk, then ``os.replace`` it over the target, so a crash or a
  kill never leaves a half-written file and the previous version survives until the new one
  is complete.
- :func:`safe_join` keeps output paths inside the output folder.
- :func:`neutralise_cell` / :func:`neutralise_frame` defuse spreadsheet formula injection
  (OWASP "CSV Injection"): a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
  carriage return gets a leading apostrophe, so Excel, LibreOffice and Google Sheets show it
  as text instead of evaluating it.
- :func:`write_table` writes a DataFrame as CSV or XLSX with both protections.
"""

from __future__ import annotations

import io
import os
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "FORMULA_PREFIXES",
    "atomic_write_bytes",
    "atomic_write_text",
    "neutralise_cell",
    "neutralise_frame",
    "safe_join",
    "write_table",
]

#: First characters that make a spreadsheet treat a cell as a formula (OWASP).
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: Any) -> Any:
    """``value`` with a leading apostrophe when it is text a spreadsheet would evaluate.

    Only text is changed: numbers, dates and missing values are returned as they are
    (a negative *number* is not a formula).

    Examples
    --------
    >>> neutralise_cell("=HYPERLINK(\\"http://x\\")")
    '\\'=HYPERLINK("http://x")'
    >>> neutralise_cell("@SUM(A1)"), neutralise_cell("-2+3"), neutralise_cell("Acme")
    ("'@SUM(A1)", "'-2+3", 'Acme')
    >>> neutralise_cell(-5.0)
    -5.0
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _is_text(series: pd.Series) -> bool:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names are safe to open in a spreadsheet.

    Text columns (object, string and categorical) pass through :func:`neutralise_cell`;
    numeric and datetime columns are left alone. The caller's frame is not changed.

    Examples
    --------
    >>> df = pd.DataFrame({"deal": ["=1+1", "ok"], "amount": [-5.0, 3.0]})
    >>> neutralise_frame(df)["deal"].tolist(), neutralise_frame(df)["amount"].tolist()
    (["'=1+1", 'ok'], [-5.0, 3.0])
    """
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if _is_text(s):
            values = s.astype(object).map(neutralise_cell)
            out[col] = values.astype(object)
    out.columns = [neutralise_cell(str(c)) for c in out.columns]
    return out


def safe_join(folder: str | PathLike[str], name: str) -> Path:
    """``folder / name``, refusing a name that would leave ``folder``.

    ``name`` must be a plain file name: no folder separators, no ``..``, not absolute.

    Raises
    ------
    ValueError
        When the resolved path is not directly inside ``folder``.

    Examples
    --------
    >>> safe_join("reports", "funnelstats-report-2024-12-31.html").name
    'funnelstats-report-2024-12-31.html'
    >>> safe_join("reports", "../etc/passwd")
    Traceback (most recent call last):
    ...
    ValueError: output name '../etc/passwd' would leave the output folder 'reports'
    """
    base = Path(folder)
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or Path(name).is_absolute()
    )
    target = base / name
    if not bad:
        resolved_base = base.resolve()
        bad = target.resolve().parent != resolved_base
    if bad:
        raise ValueError(f"output name {name!r} would leave the output folder {str(base)!r}")
    return target


def atomic_write_bytes(path: str | PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    The bytes go to a hidden temporary file in the same folder, which is flushed to disk
    and then renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows).
    Until that rename, a reader sees the previous file, untouched; if anything fails the
    temporary file is removed and the error is raised.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_bytes(folder / "a.txt", b"new").read_bytes()
    b'new'
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_all(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _write_all(fh: Any, data: bytes, chunk: int = 1 << 20) -> None:
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        fh.write(view[start : start + chunk])


def _fsync_dir(folder: Path) -> None:
    """Persist the rename (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def write_table(frame: pd.DataFrame, path: str | PathLike[str], *, index: bool = False) -> Path:
    """Write ``frame`` as CSV or XLSX (by the suffix), formula-safe and atomically.

    Parameters
    ----------
    frame : DataFrame
    path : path
        ``.csv`` (UTF-8) or ``.xlsx`` (needs openpyxl: ``pip install funnelstats[xlsx]``).
    index : bool, default False
        Write the index as the first column(s).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = write_table(pd.DataFrame({"deal": ["=cmd"], "amount": [1.5]}), p)
    >>> print(p.read_text())
    deal,amount
    '=cmd,1.5
    <BLANKLINE>
    """
    target = Path(path)
    safe = neutralise_frame(frame.reset_index() if index else frame)
    suffix = target.suffix.lower()
    if suffix == ".csv":
        data = safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")
    elif suffix == ".xlsx":
        try:
            import openpyxl  # noqa: F401
        except ImportError:  # pragma: no cover - openpyxl is a dev dependency
            raise ImportError(
                "writing .xlsx needs openpyxl: pip install 'funnelstats[xlsx]'"
            ) from None
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        def xml_safe(value: Any) -> Any:
            # control characters XML cannot hold become U+FFFD (visible; and replacing
            # rather than removing them cannot turn "\x08=1+1" into a formula)
            if isinstance(value, str):
                return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
            return value

        buf = io.BytesIO()
        for col in safe.columns:
            if isinstance(safe[col].dtype, pd.DatetimeTZDtype):
                safe[col] = safe[col].dt.tz_localize(None)
            elif _is_text(safe[col]):
                safe[col] = safe[col].astype(object).map(xml_safe).astype(object)
        safe.columns = [xml_safe(c) for c in safe.columns]
        safe.to_excel(buf, index=False, engine="openpyxl")
        data = buf.getvalue()
    else:
        raise ValueError(f"cannot write {target.name!r}: use a .csv or .xlsx file name")
    return atomic_write_bytes(target, data)
