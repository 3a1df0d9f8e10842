"""Property tests of ingest over generated exports (hypothesis)."""

from __future__ import annotations

import csv
import gzip
import io

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

import funnelstats as fs

BASE = pd.Timestamp("2024-01-01", tz="UTC")
FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.000Z")


@st.composite
def exports(draw):
    """A random pipeline and a long export with skips, regressions, reopenings, ties,
    duplicates, open deals and a few broken cells."""
    n_open = draw(st.integers(1, 5))
    stages = [f"S{i}" for i in range(n_open)]
    pipe = fs.Pipeline(stages, won=["Won"], lost=["Lost"])
    names = [*stages, "Won", "Lost"]
    n_deals = draw(st.integers(1, 12))
    rows = []
    for d in range(n_deals):
        deal = draw(st.sampled_from([f"{d:03d}", f"D{d}", f"  D{d}"]))
        t = draw(st.integers(0, 50 * 24)) * 3600  # seconds from BASE, on the hour: ties happen
        for _ in range(draw(st.integers(1, 7))):
            stage = draw(st.sampled_from(names))
            amount = draw(st.sampled_from(["100", "2500.5", "", "-3", "$1,000", "abc"]))
            rows.append((deal, stage, t, amount))
            t += draw(st.sampled_from([0, 3600, 86400, 5 * 86400]))
            if draw(st.integers(0, 9)) == 0:  # an exact duplicate
                rows.append(rows[-1])
    fmt = draw(st.sampled_from(FORMATS))
    broken = draw(st.lists(st.integers(0, len(rows) - 1), max_size=2))
    records = []
    true_at = []
    for i, (deal, stage, t, amount) in enumerate(rows):
        ts = BASE + pd.Timedelta(seconds=t)
        text = ts.strftime(fmt)
        if i in broken:
            text = draw(st.sampled_from(["", "not a date", "2024-02-30 10:00:00"]))
            ts = pd.NaT
        records.append({"deal_id": deal, "stage": stage, "timestamp": text, "amount": amount})
        true_at.append(ts)
    order = draw(st.permutations(range(len(records))))
    frame = pd.DataFrame([records[i] for i in order])
    at = pd.Series([true_at[i] for i in order], dtype="datetime64[ns, UTC]")
    return frame, at, pipe


def read(frame, pipe, **kw):
    return fs.read_events(frame, pipeline=pipe, **kw)


@given(exports())
def test_ingest_invariants(ex):
    frame, _, pipe = ex
    if frame["timestamp"].map(lambda s: s[:4].isdigit() and s != "2024-02-30 10:00:00").sum() == 0:
        return  # every row broken: covered by a unit test
    d = read(frame, pipe)
    r = d.report
    # nothing lost
    assert r.rows_read == len(frame)
    assert r.rows_read == r.rows_kept + r.rows_repaired + r.rows_quarantined
    assert len(d.history) == r.rows_read - r.rows_quarantined - r.count("duplicate_row")
    ev = d.events
    # sorted by deal, time
    key = list(zip(ev["deal_id"], ev["entered_at"]))
    assert key == sorted(key)
    same_next = ev["deal_id"].to_numpy()[1:] == ev["deal_id"].to_numpy()[:-1]
    # exited_at is the next row's entered_at within a deal; the last row has no exit
    np.testing.assert_array_equal(
        ev["exited_at"].to_numpy()[:-1][same_next], ev["entered_at"].to_numpy()[1:][same_next]
    )
    last = np.r_[~same_next, True]
    assert ev["exited_at"][last].isna().all() and ev["next_stage"][last].isna().all()
    assert ev["exited_at"][~last].notna().all()
    # a stage entry means the stage changed
    st_codes = ev["stage"].cat.codes.to_numpy()
    assert not np.any((st_codes[1:] == st_codes[:-1]) & same_next)
    # a terminal stage is left only by a counted reopening
    terminal = ev["stage"].isin(pipe.terminal).to_numpy()
    assert int((terminal & ~last).sum()) == r.count("reopened")
    # outcomes agree with the last stage
    last_stage = ev.loc[last, "stage"].astype(str).to_numpy()
    outcome = d.deals["outcome"].astype(str).to_numpy()
    np.testing.assert_array_equal(
        outcome,
        np.where(
            np.isin(last_stage, pipe.won),
            "won",
            np.where(np.isin(last_stage, pipe.lost), "lost", "open"),
        ),
    )
    assert (d.deals["deal_id"] == d.deals["deal_id"].str.strip()).all()


@given(exports(), st.floats(0, 1))
def test_as_of_equals_an_export_taken_then(ex, q):
    """as_of(ts) equals reading only the rows an export at ts would have had."""
    frame, at, pipe = ex
    ok = at.notna()
    if not ok.any():
        return
    lo, hi = at[ok].min(), at[ok].max()
    ts = lo + (hi - lo) * q
    full = read(frame, pipe)
    cut = full.as_of(ts)
    # independent: the input rows dated by ts (broken rows are quarantined either way)
    visible = frame[(~ok | (at <= ts)).to_numpy()]
    if not (at[ok] <= ts).any():
        return
    then = read(visible, pipe, exported_at=ts)
    pd.testing.assert_frame_equal(cut.events, then.events)
    cols = ["deal_id", "created_at", "outcome", "closed_at", "amount", "stage", "furthest_stage"]
    pd.testing.assert_frame_equal(cut.deals[cols], then.deals[cols])
    # nothing after ts
    assert (cut.events["entered_at"] <= ts).all()
    assert (cut.events["exited_at"].dropna() <= ts).all()
    assert (cut.deals["closed_at"].dropna() <= ts).all()


@given(exports(), st.floats(0, 1), st.floats(0, 1))
def test_as_of_is_monotone(ex, q1, q2):
    """Cutting earlier never adds information."""
    frame, at, pipe = ex
    ok = at.notna()
    if not ok.any():
        return
    lo, hi = at[ok].min(), at[ok].max()
    t1, t2 = sorted([lo + (hi - lo) * q1, lo + (hi - lo) * q2])
    d = read(frame, pipe)
    a, b = d.as_of(t1), d.as_of(t2)
    assert len(a.history) <= len(b.history)
    assert set(a.deals["deal_id"]) <= set(b.deals["deal_id"])
    pd.testing.assert_frame_equal(b.as_of(t1).events, a.events)


@st.composite
def dialects(draw):
    """How a spreadsheet or a CRM might write the same table to a file."""
    return {
        "delimiter": draw(st.sampled_from([",", ";", "\t", "|"])),
        "lineterminator": draw(st.sampled_from(["\n", "\r\n"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        "encoding": draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"])),
        "blank_after": draw(st.sets(st.integers(0, 80), max_size=3)),
        "compress": draw(st.booleans()),
    }


def write_export(frame, path, dialect):
    """The frame as a delimited text file; returns the file row of each frame row."""
    buf = io.StringIO()
    end = dialect["lineterminator"]
    w = csv.writer(
        buf, delimiter=dialect["delimiter"], lineterminator=end, quoting=dialect["quoting"]
    )
    w.writerow(frame.columns)
    rows, row = [], 2
    for i, rec in enumerate(frame.itertuples(index=False)):
        w.writerow(rec)
        rows.append(row)
        row += 1
        if i in dialect["blank_after"]:  # a blank line is a row in a spreadsheet, not data
            buf.write(end)
            row += 1
    data = buf.getvalue().encode(dialect["encoding"])
    if dialect["compress"]:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return np.asarray(rows)


@given(exports(), dialects())
def test_a_file_reads_as_its_table(tmp_path_factory, ex, dialect):
    """Written to a file in any dialect, an export reads as the table it came from:
    the same events, deals and counts, with the rows numbered as a spreadsheet shows them."""
    frame, _, pipe = ex
    if frame["timestamp"].map(lambda s: s[:4].isdigit() and s != "2024-02-30 10:00:00").sum() == 0:
        return
    frame = frame.assign(
        note=[f"line {i}\nsecond, line" if i % 3 == 0 else "" for i in range(len(frame))]
    )
    path = tmp_path_factory.mktemp("dialect") / (
        "export.csv.gz" if dialect["compress"] else "export.csv"
    )
    rows = write_export(frame, path, dialect)
    from_file, from_frame = read(path, pipe), read(frame, pipe)
    pd.testing.assert_frame_equal(from_file.events, from_frame.events)
    cols = ["deal_id", "created_at", "outcome", "closed_at", "amount", "stage", "furthest_stage"]
    pd.testing.assert_frame_equal(from_file.deals[cols], from_frame.deals[cols])
    a, b = from_file.report, from_frame.report
    assert (a.rows_read, a.rows_kept, a.rows_repaired, a.rows_quarantined) == (
        b.rows_read,
        b.rows_kept,
        b.rows_repaired,
        b.rows_quarantined,
    )
    assert a.counts == b.counts
    # a DataFrame's rows are numbered by position; the file's as a spreadsheet numbers them
    assert a.quarantined["row"].tolist() == rows[b.quarantined["row"].to_numpy(dtype=int)].tolist()
    np.testing.assert_array_equal(
        from_file.history["source_row"], rows[from_frame.history["source_row"].to_numpy()]
    )
