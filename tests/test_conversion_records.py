"""The vectorised episode derivation equals a plain per-deal loop written from the rules.

The loop below is a second, independent implementation of the rules stated in
``funnelstats/_conversion_records.py`` (first arrival counts, backward moves end
nothing, the last word decides, skip rules), walking each deal's stage entries
one by one. Hypothesis generates stage walks with skips, backward moves,
reopenings and terminal stages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

import funnelstats as fs
from funnelstats._conversion_records import stage_records, win_records

OPEN = ["S0", "S1", "S2", "S3"]
PIPE = fs.Pipeline(OPEN, won=["Won"], lost=["Lost"])
N_OPEN = len(OPEN)
WON, LOST = N_OPEN, N_OPEN + 1
START = pd.Timestamp("2024-01-01", tz="UTC")


def _kind(code: int) -> str:
    return "open" if code < N_OPEN else ("won" if code == WON else "lost")


def reference(seq: list[tuple[int, int]], exported: int, skips: str) -> list[tuple]:
    """Episodes of one deal: (stage, start, end, cause, skipped_through, moved_back, reopened).

    ``seq`` is the deal's stage entries (code, time) in order; cause 0 open,
    1 advanced, 2 lost, 3 skipped out.
    """
    out = []
    last_kind = _kind(seq[-1][0])

    def beyond(code: int, s: int) -> bool:
        return code > s and _kind(code) != "lost"

    def flags(s: int, reach: int, stop: int) -> tuple[bool, bool]:
        back = any(
            seq[j][0] == s
            and j + 1 < len(seq)
            and _kind(seq[j + 1][0]) == "open"
            and seq[j + 1][0] < s
            for j in range(reach, stop)
        )
        reopened = any(_kind(seq[j][0]) == "lost" and j + 1 < len(seq) for j in range(reach, stop))
        return back, reopened

    def finish(s, reach, got_past, advanced):
        if got_past is not None:
            cause = 1 if advanced else 3
            end = seq[got_past][1]
            stop = got_past
        elif last_kind == "lost":
            cause, end, stop = 2, seq[-1][1], len(seq)
        else:
            cause, end, stop = 0, exported, len(seq)
        back, reopened = flags(s, reach, stop)
        start = seq[reach][1]
        out.append((s, start, max(end, start), cause, seq[reach][0] != s, back, reopened))
        return cause

    if skips == "reached":
        for s in range(N_OPEN):
            reach = None
            last_open = None
            for i, (code, _t) in enumerate(seq):
                if code == s or (beyond(code, s) and last_open is not None and last_open < s):
                    reach = i
                    break
                if _kind(code) == "open":
                    last_open = code
            if reach is None:
                continue
            got = next((j for j in range(reach, len(seq)) if beyond(seq[j][0], s)), None)
            finish(s, reach, got, True)
    else:
        if seq[0][0] != 0:
            return out
        reach = 0
        for s in range(N_OPEN):
            got = next((j for j in range(reach, len(seq)) if beyond(seq[j][0], s)), None)
            if got is not None:
                nxt = seq[got][0]
                in_order = (nxt == s + 1) if s + 1 < N_OPEN else (nxt == WON)
            else:
                in_order = False
            cause = finish(s, reach, got, in_order)
            if cause != 1:
                break
            reach = got
    return out


def reference_win(episodes: list[tuple], seq, exported, skips) -> list[tuple[int, int]]:
    """(end, cause) of the win/loss fate of each episode (cause 0 open, 1 won, 2 lost, 3 out)."""
    if skips == "reached":
        kind = _kind(seq[-1][0])
        cause = {"won": 1, "lost": 2}.get(kind, 0)
        end = seq[-1][1] if cause else exported
        return [(max(end, e[1]), cause) for e in episodes]
    out = []
    for i, e in enumerate(episodes):
        # follow the in-order chain from episode i
        j = i
        while episodes[j][3] == 1 and j + 1 < len(episodes):
            j += 1
        last = episodes[j]
        if last[3] == 1:  # advanced from the last open stage: won
            out.append((last[2], 1))
        elif last[3] in (2, 3):
            out.append((last[2], last[3]))
        else:
            out.append((exported, 0))
        del e
    return out


walks = st.lists(st.tuples(st.integers(0, N_OPEN + 1), st.integers(1, 72)), min_size=1, max_size=9)


def _dedupe(walk):
    out = []
    for code, dt in walk:
        if out and out[-1][0] == code:
            continue
        out.append((code, dt))
    return out


@given(st.lists(walks, min_size=1, max_size=12), st.sampled_from(["reached", "strict"]))
def test_vectorised_equals_reference(deal_walks, skips):
    rows = []
    seqs = {}
    for k, walk in enumerate(deal_walks):
        walk = _dedupe(walk)
        t = START.value + k * 3_600 * 10**9
        seq = []
        for code, dt in walk:
            t += dt * 3_600 * 10**9
            seq.append((code, t))
            rows.append((f"d{k:02d}", [*OPEN, "Won", "Lost"][code], pd.Timestamp(t, tz="UTC")))
        seqs[f"d{k:02d}"] = seq
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "entered_at"])
    exported = max(t for s in seqs.values() for _, t in s) + 10 * 3_600 * 10**9
    data = fs.FunnelData.from_events(
        frame, pipeline=PIPE, exported_at=pd.Timestamp(exported, tz="UTC")
    )

    rec = stage_records(data, skips=skips)
    w_end, w_cause = win_records(data, rec)
    ids = data.deals["deal_id"].to_numpy()
    got = sorted(
        (
            str(ids[d]),
            int(s),
            int(a),
            int(b),
            int(c),
            bool(x),
            bool(y),
            bool(z),
            int(we),
            int(wc),
        )
        for d, s, a, b, c, x, y, z, we, wc in zip(
            rec.deal,
            rec.stage,
            rec.start,
            rec.end,
            rec.cause,
            rec.skipped_through,
            rec.moved_back,
            rec.reopened,
            w_end,
            w_cause,
        )
    )
    want = []
    for deal, seq in seqs.items():
        eps = reference(seq, exported, skips)
        for e, (we, wc) in zip(eps, reference_win(eps, seq, exported, skips)):
            want.append((deal, *e[:3], e[3], *e[4:], we, wc))
    want = sorted(
        (d, int(s), int(a), int(b), int(c), bool(x), bool(y), bool(z), int(we), int(wc))
        for d, s, a, b, c, x, y, z, we, wc in want
    )
    assert got == want


def test_no_events_gives_no_records():
    data = fs.FunnelData.from_events(
        pd.DataFrame({"deal_id": ["a"], "stage": ["Won"], "entered_at": ["2024-01-01"]}),
        pipeline=PIPE,
        exported_at="2024-02-01",
    )
    rec = stage_records(data)
    assert len(rec) == 0
    f = fs.conversion(data).frame
    assert f["entered"].tolist() == [0, 0, 0, 0]
    assert np.isnan(f["conversion"]).all()
