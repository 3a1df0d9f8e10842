"""Pipedrive: the deals export, with the deal flow / changelog for the full history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data import FunnelData
from ..errors import FunnelDataError
from ..pipeline import Pipeline
from ._crm import (
    blank,
    carry_forward,
    combine,
    currency_notes,
    find_column,
    load_json,
    looks_like_json,
    to_table,
)
from ._io import Source, Table
from ._parse import parse_timestamps
from .generic import PipelineLike, as_pipeline
from .validate import Mapped, build_funnel, resolve_column

__all__ = ["PIPEDRIVE_LOST", "PIPEDRIVE_WON", "read_pipedrive"]

#: The terminal stages funnelstats adds: Pipedrive keeps won/lost as a status, not a stage.
PIPEDRIVE_WON = "Won"
PIPEDRIVE_LOST = "Lost"

_ID = ("id", "Deal - ID", "deal_id")
_STAGE = ("stage_id", "Deal - Stage", "stage", "stage_name")
_PIPE = ("pipeline_id", "Deal - Pipeline", "pipeline", "pipeline_name")
_STATUS = ("status", "Deal - Status")
_VALUE = ("value", "Deal - Value")
_CURRENCY = ("currency", "Deal - Currency", "Deal - Currency of Value")
_ADD = ("add_time", "Deal - Deal created")
_STAGE_CHANGE = ("stage_change_time", "Deal - Last stage change")
_WON = ("won_time", "Deal - Won time")
_LOST = ("lost_time", "Deal - Lost time")
_CLOSE = ("close_time", "Deal - Deal closed on")
_EXPECTED = ("expected_close_date", "Deal - Expected close date")
_DEFAULT_ATTRS = (
    ("lost_reason", "Deal - Lost reason"),
    ("owner_name", "user_id", "Deal - Owner"),
    ("org_name", "Deal - Organization"),
)

_FLOW_DEAL = ("item_id", "deal_id", "Deal - ID", "id")
_FLOW_TIME = ("log_time", "time", "timestamp")


def read_pipedrive(
    source: Source,
    *,
    flow: Any = None,
    stages: Any = None,
    pipeline: PipelineLike = None,
    attributes: Sequence[str] | None = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    encoding: str | None = None,
) -> FunnelData:
    """Read a Pipedrive deals export, with its deal flow or changelog when given.

    Pipedrive keeps won and lost as a *status* separate from the stage: a won
    deal stays in its last stage with ``status = won``. funnelstats adds the
    terminal stages ``"Won"`` and ``"Lost"``, entered at ``won_time`` /
    ``lost_time`` (or at the flow's status change).

    Parameters
    ----------
    source : path, file object, or DataFrame
        The deals export: ``id, stage_id`` (or a stage name), ``pipeline_id,
        status`` (``open``/``won``/``lost``/``deleted``), ``value, currency,
        add_time, update_time, stage_change_time, won_time, lost_time,
        close_time, lost_reason``; the app's CSV export (``Deal - ID``, ``Deal -
        Stage``, ``Deal - Status``, ``Deal - Deal created``, ...) also reads.
    flow : path, DataFrame, or parsed JSON, optional
        The deal flow (``GET /v1/deals/{id}/flow``: ``dealChange`` items) or
        changelog (``GET /v1/deals/{id}/changelog``), as JSON or flattened to
        a table with ``item_id`` (or ``deal_id``), ``field_key, old_value,
        new_value, log_time`` (or ``time``). ``stage_id`` changes are stage
        entries, ``status`` changes won / lost / reopened, ``value`` changes
        amount updates; other fields are counted as not used. A changelog as a
        mapping ``{deal_id: [changes]}`` reads too.
    stages : path, DataFrame, or parsed JSON, optional
        The stages (``GET /v1/stages``: ``id, name, order_nr, pipeline_id``):
        names for stage ids and the stage order.
    pipeline : Pipeline, dict or TOML path, optional
        Overrides the pipeline built from ``stages``.
    attributes : list of str, optional
        Deal columns kept as attributes (default: pipeline, lost reason, owner,
        organisation where present).
    tz, exported_at, strict, on_unknown_stage, encoding
        As in :func:`funnelstats.read_events`. Pipedrive writes UTC
        (``YYYY-MM-DD HH:MM:SS``, or ISO with ``Z``).

    Returns
    -------
    FunnelData
        Without a flow, the history is partial: a deal that changed stage has
        its current stage entered at ``stage_change_time`` and its created date
        from ``add_time``, and ``has_stage_history`` is False.

    Examples
    --------
    >>> import funnelstats as fs
    >>> deals = pd.DataFrame({
    ...     "id": ["1", "2"], "stage": ["Lead In", "Contact Made"], "status": ["won", "open"],
    ...     "add_time": ["2024-01-02 10:00:00", "2024-01-03 10:00:00"],
    ...     "won_time": ["2024-01-20 10:00:00", None],
    ... })
    >>> d = fs.read_pipedrive(deals, exported_at="2024-02-01")
    >>> d.deals[["deal_id", "outcome", "stage"]]
      deal_id outcome         stage
    0       1     won           Won
    1       2    open  Contact Made
    """
    deals_t = to_table(source, encoding)
    d = deals_t.frame
    id_c = resolve_column(deals_t, None, _ID, "deal")
    stage_c = resolve_column(deals_t, None, _STAGE, "stage")
    status_c = resolve_column(deals_t, None, _STATUS, "status")
    add_c = resolve_column(deals_t, None, _ADD, "created")
    pipe_c = find_column(deals_t, _PIPE)
    value_c = find_column(deals_t, _VALUE)
    cur_c = find_column(deals_t, _CURRENCY)
    sc_c = find_column(deals_t, _STAGE_CHANGE)
    won_c, lost_c, close_c = (find_column(deals_t, x) for x in (_WON, _LOST, _CLOSE))
    exp_c = find_column(deals_t, _EXPECTED)
    stage_names, pipe_names, stage_pipe = _stage_names(stages)

    flow_t = None if flow is None else _flow_table(flow, encoding)
    table = combine([deals_t, flow_t]) if flow_t is not None else deals_t
    n_deals = len(d)
    n_all = len(table.frame)
    ids = d[id_c].astype("string").str.strip()
    status = d[status_c].astype("string").str.strip().str.lower()
    cur_stage = d[stage_c].astype("string").str.strip()
    value = d[value_c].astype("string") if value_c else pd.Series(pd.NA, index=d.index)

    def name_of(s: pd.Series) -> pd.Series:
        s = s.astype("string").str.strip()
        return s.map(lambda v: stage_names.get(v, v) if v is not pd.NA else v).astype("string")

    cur_stage = name_of(cur_stage)
    deleted = status.eq("deleted").to_numpy(dtype=bool, na_value=False)
    deleted_ids = set(ids[deleted].dropna())
    notes = [f"{deals_t.name}: Pipedrive deals export"]

    parts: list[pd.DataFrame] = []
    source_notes = []
    first_stage = cur_stage.copy()
    first_amount = value.copy()
    flow_status_deals: set[str] = set()
    if flow_t is not None:
        fl = flow_t.frame.reset_index(drop=True)
        fdeal_c = resolve_column(flow_t, None, _FLOW_DEAL, "deal")
        fkey_c = resolve_column(flow_t, None, ("field_key",), "field_key")
        fold_c = resolve_column(flow_t, None, ("old_value",), "old_value")
        fnew_c = resolve_column(flow_t, None, ("new_value",), "new_value")
        ftime_c = resolve_column(flow_t, None, _FLOW_TIME, "time")
        fpos = np.arange(len(fl)) + n_deals
        fdeal = fl[fdeal_c].astype("string").str.strip()
        key = fl[fkey_c].astype("string").str.strip().str.lower()
        # names from the flow's formatted values when no stages file is given
        for raw_c, fmt_c in (
            (fold_c, "old_value_formatted"),
            (fnew_c, "new_value_formatted"),
        ):
            if fmt_c in fl.columns:
                is_st = key.eq("stage_id").to_numpy(dtype=bool, na_value=False)
                for k, v in zip(fl[raw_c][is_st], fl[fmt_c][is_st]):
                    if k is not pd.NA and v is not pd.NA and str(k) not in stage_names:
                        stage_names[str(k).strip()] = str(v).strip()
        cur_stage = name_of(d[stage_c])
        first_stage = cur_stage.copy()
        is_stage = key.eq("stage_id").to_numpy(dtype=bool, na_value=False)
        is_status = key.eq("status").to_numpy(dtype=bool, na_value=False)
        is_value = key.eq("value").to_numpy(dtype=bool, na_value=False)
        t = parse_timestamps(fl[ftime_c]).ns
        # first stage: the old value of each deal's first stage change
        st = np.flatnonzero(is_stage)
        st = st[np.lexsort((t[st], pd.factorize(fdeal.iloc[st])[0]))]
        firsts = pd.DataFrame({"deal": fdeal.iloc[st].to_numpy(), "old": fl[fold_c].iloc[st]})
        firsts = firsts.drop_duplicates("deal").set_index("deal")["old"]
        got = ids.isin(firsts.index).to_numpy(dtype=bool, na_value=False)
        first_stage[got] = name_of(firsts.reindex(ids[got].to_numpy())).to_numpy()
        va = np.flatnonzero(is_value)
        va = va[np.lexsort((t[va], pd.factorize(fdeal.iloc[va])[0]))]
        fv = pd.DataFrame({"deal": fdeal.iloc[va].to_numpy(), "old": fl[fold_c].iloc[va]})
        fv = fv.drop_duplicates("deal").set_index("deal")["old"]
        gv = ids.isin(fv.index).to_numpy(dtype=bool, na_value=False)
        first_amount = first_amount.astype("string")
        first_amount[gv] = fv.reindex(ids[gv].to_numpy()).astype("string").to_numpy()
        # stage entries
        parts.append(
            pd.DataFrame(
                {
                    "pos": fpos[is_stage],
                    "deal": fdeal[is_stage].to_numpy(),
                    "stage": name_of(fl[fnew_c][is_stage]).to_numpy(),
                    "at": fl[ftime_c][is_stage].to_numpy(),
                    "amount": pd.NA,
                    "update": False,
                }
            )
        )
        # status changes: won / lost, and reopenings back into the last open stage
        new_status = fl[fnew_c].astype("string").str.strip().str.lower()
        stt = fl[is_status].assign(_pos=fpos[is_status], _new=new_status[is_status].to_numpy())
        flow_status_deals = set(fdeal[is_status].dropna())
        outcome = stt["_new"].map({"won": PIPEDRIVE_WON, "lost": PIPEDRIVE_LOST})
        reopen = stt["_new"].eq("open").to_numpy(dtype=bool, na_value=False)
        if reopen.any():
            outcome[reopen] = _stage_before(
                fdeal[is_status][reopen],
                t[is_status][reopen],
                fdeal[is_stage],
                t[is_stage],
                name_of(fl[fnew_c][is_stage]),
                ids,
                first_stage,
            ).to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "pos": stt["_pos"].to_numpy(),
                    "deal": fdeal[is_status].to_numpy(),
                    "stage": outcome.to_numpy(dtype=object),
                    "at": fl[ftime_c][is_status].to_numpy(),
                    "amount": pd.NA,
                    "update": False,
                }
            )
        )
        parts.append(
            pd.DataFrame(
                {
                    "pos": fpos[is_value],
                    "deal": fdeal[is_value].to_numpy(),
                    "stage": pd.NA,
                    "at": fl[ftime_c][is_value].to_numpy(),
                    "amount": fl[fnew_c][is_value].to_numpy(),
                    "update": True,
                }
            )
        )
        unused = np.zeros(n_all, dtype=bool)
        unused[n_deals:] = ~(is_stage | is_status | is_value)
        if unused.any():
            source_notes.append(
                (
                    unused,
                    "field_not_used",
                    fkey_c,
                    "change of a field other than stage_id, status or value",
                )
            )
        fdel = np.zeros(n_all, dtype=bool)
        fdel[n_deals:] = fdeal.isin(deleted_ids).to_numpy(dtype=bool, na_value=False)
        notes.append(f"{flow_t.name}: deal flow / changelog (stage_id, status, value)")

    # rows from the deals export: the entry at creation, and the outcome
    add = d[add_c].astype("string")
    created_at = add
    moved_any = False
    if flow_t is None and sc_c is not None:
        sc = d[sc_c].astype("string")
        moved = ~blank(sc) & (parse_timestamps(sc).ns != parse_timestamps(add).ns)
        created_at = add.where(~pd.Series(moved), sc)
        moved_any = bool(moved.any())
        if moved_any:
            notes.append(
                f"no deal flow given: {int(moved.sum())} deal(s) changed stage; their current "
                "stage is entered at stage_change_time and earlier stages are unknown "
                "(pass flow= for the full history)"
            )
    rows = np.arange(n_deals)
    parts.insert(
        0,
        pd.DataFrame(
            {
                "pos": rows,
                "deal": ids.to_numpy(),
                "stage": first_stage.to_numpy(dtype=object),
                "at": created_at.to_numpy(dtype=object),
                "amount": first_amount.to_numpy(dtype=object),
                "update": False,
            }
        ),
    )
    won_at = _first_filled(d, [won_c, close_c])
    lost_at = _first_filled(d, [lost_c, close_c])
    has_flow_status = ids.isin(flow_status_deals).to_numpy(dtype=bool, na_value=False)
    is_won = status.eq("won").to_numpy(dtype=bool, na_value=False) & ~has_flow_status
    is_lost = status.eq("lost").to_numpy(dtype=bool, na_value=False) & ~has_flow_status
    for mask, name, when in ((is_won, PIPEDRIVE_WON, won_at), (is_lost, PIPEDRIVE_LOST, lost_at)):
        parts.append(
            pd.DataFrame(
                {
                    "pos": rows[mask],
                    "deal": ids[mask].to_numpy(),
                    "stage": name,
                    "at": when[mask].to_numpy(dtype=object),
                    "amount": value[mask].to_numpy(dtype=object),
                    "update": False,
                }
            )
        )
    m = pd.concat(parts, ignore_index=True)
    m = m.sort_values("pos", kind="stable").reset_index(drop=True)
    upd = m["update"].to_numpy(dtype=bool)
    amount = carry_forward(m["deal"], m["at"], m["amount"].astype("string"), upd)

    pre = []
    dele = np.zeros(n_all, dtype=bool)
    dele[:n_deals] = deleted
    if flow_t is not None:
        dele |= fdel
    if dele.any():
        pre.append((dele, "deleted", status_c, "status is deleted"))

    # attributes, per mapped row via the deal id
    attr_names = list(attributes) if attributes is not None else []
    if attributes is None:
        attr_names = [c for c in (find_column(deals_t, a) for a in _DEFAULT_ATTRS) if c]
    by_id = d.assign(_id=ids.to_numpy()).drop_duplicates("_id", keep="last").set_index("_id")
    attrs = pd.DataFrame(index=range(len(m)))
    if pipe_c:
        pv = by_id[pipe_c].astype("string").str.strip()
        attrs["pipeline"] = (
            pv.map(lambda v: pipe_names.get(v, v) if v is not pd.NA else None)
            .reindex(m["deal"].to_numpy())
            .to_numpy(dtype=object)
        )
    for c in attr_names:
        if c not in d.columns:
            raise FunnelDataError(f"no attribute column {c!r}", file=deals_t.name, column=c)
        attrs[c] = by_id[c].reindex(m["deal"].to_numpy()).to_numpy(dtype=object)
    currency = None
    if cur_c:
        currency = by_id[cur_c].astype("string").reindex(m["deal"].to_numpy())
        currency = currency.reset_index(drop=True)
        notes += currency_notes(d[cur_c])
    close = None
    if exp_c:
        close = by_id[exp_c].astype("string").reindex(m["deal"].to_numpy()).reset_index(drop=True)
    pipe = as_pipeline(pipeline)
    if pipe is None:
        pipe = _pipeline(m["stage"], stage_pipe, stages is not None)
    mapped = Mapped(
        table=table,
        layout="pipedrive",
        deal=m["deal"].astype("string"),
        stage=m["stage"].astype("string"),
        at=m["at"].astype("string"),
        amount=amount,
        close_date=close,
        currency=currency,
        attributes=attrs if len(attrs.columns) else None,
        pos=m["pos"].to_numpy(dtype=np.int64),
        update_only=upd,
        created=None if flow_t is not None else add.iloc[m["pos"]].reset_index(drop=True),
        columns={
            "deal": id_c,
            "stage": stage_c,
            "at": add_c,
            "amount": value_c or "",
            "currency": cur_c or "",
        },
        pre_quarantine=pre,
        source_notes=source_notes,
        notes=notes,
        has_stage_history=not moved_any,
    )
    return build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz or "UTC",
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
    )


def _first_filled(d: pd.DataFrame, cols: list[str | None]) -> pd.Series:
    out = pd.Series(pd.NA, index=d.index, dtype="string")
    for c in cols:
        if c is not None:
            v = d[c].astype("string")
            out = out.where(~pd.Series(blank(out), index=d.index), v)
    return out


def _stage_before(
    deal: pd.Series,
    t: np.ndarray,
    st_deal: pd.Series,
    st_t: np.ndarray,
    st_name: pd.Series,
    ids: pd.Series,
    first_stage: pd.Series,
) -> pd.Series:
    """The stage each deal was in at time ``t`` (its last stage change before, or its first)."""
    left = pd.DataFrame({"deal": deal.to_numpy(dtype=object), "t": t, "_i": np.arange(len(t))})
    right = pd.DataFrame(
        {"deal": st_deal.to_numpy(dtype=object), "t": st_t, "stage": st_name.to_numpy()}
    )
    got = pd.merge_asof(
        left.sort_values("t"), right.sort_values("t"), on="t", by="deal", direction="backward"
    ).sort_values("_i")
    first = pd.Series(first_stage.to_numpy(), index=ids.to_numpy())
    first = first[~first.index.duplicated(keep="last")]
    fill = first.reindex(got["deal"].to_numpy()).to_numpy()
    return pd.Series(np.where(got["stage"].isna(), fill, got["stage"]), dtype="string")


def _flow_table(flow: Any, encoding: str | None) -> Table:
    """A deal flow / changelog as a table with one row per change."""
    if isinstance(flow, Table) or isinstance(flow, pd.DataFrame) or not looks_like_json(flow):
        return to_table(flow, encoding)
    data, name = load_json(flow)
    items: list[tuple[Any, dict[str, Any]]] = []
    if isinstance(data, dict) and "data" not in data:
        for did, changes in data.items():  # {deal_id: [changes]}
            for ch in changes or []:
                items.append((did, ch))
    else:
        lst = data.get("data", []) if isinstance(data, dict) else data
        for it in lst or []:
            items.append((None, it))
    recs = []
    for did, it in items:
        if "object" in it:  # a flow item
            if it.get("object") != "dealChange":
                continue
            ch = dict(it.get("data") or {})
            ch.setdefault("log_time", it.get("timestamp"))
        else:
            ch = dict(it)
        extra = ch.pop("additional_data", None) or {}
        rec = {
            "item_id": str(did if did is not None else ch.get("item_id", ch.get("deal_id"))),
            "field_key": ch.get("field_key"),
            "old_value": None if ch.get("old_value") is None else str(ch.get("old_value")),
            "new_value": None if ch.get("new_value") is None else str(ch.get("new_value")),
            "log_time": ch.get("log_time") or ch.get("time") or ch.get("timestamp"),
            "old_value_formatted": extra.get("old_value_formatted"),
            "new_value_formatted": extra.get("new_value_formatted"),
        }
        recs.append(rec)
    if not recs:
        raise FunnelDataError("no deal changes in the flow", file=name, rule="header_only")
    frame = pd.DataFrame(recs).astype("string[pyarrow]")
    return Table(frame, name, np.arange(len(frame)) + 1, row_word="change")


def _stage_names(stages: Any) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """Stage id -> name, pipeline id -> name, and the stages in pipeline order."""
    if stages is None:
        return {}, {}, []
    if looks_like_json(stages) and not isinstance(stages, pd.DataFrame):
        data, _ = load_json(stages)
        lst = data.get("data", data) if isinstance(data, dict) else data
        frame = pd.DataFrame(lst).astype("string")
    else:
        frame = to_table(stages).frame.astype("string")
    t = Table(frame, "stages", np.arange(len(frame)))
    id_c = resolve_column(t, None, ("id", "stage_id"), "stage id")
    name_c = resolve_column(t, None, ("name", "stage_name"), "stage name")
    order_c = find_column(t, ("order_nr", "order"))
    pid_c = find_column(t, ("pipeline_id",))
    pname_c = find_column(t, ("pipeline_name",))
    order = (
        pd.to_numeric(frame[order_c], errors="coerce") if order_c else pd.Series(range(len(frame)))
    )
    pid = frame[pid_c] if pid_c else pd.Series("", index=frame.index)
    f2 = frame.assign(_o=order.to_numpy(), _p=pd.to_numeric(pid, errors="coerce").to_numpy())
    f2 = f2.sort_values(["_p", "_o"], kind="stable")
    names = dict(zip(frame[id_c].str.strip(), frame[name_c].str.strip()))
    pipes = (
        dict(zip(frame[pid_c].str.strip(), frame[pname_c].str.strip())) if pid_c and pname_c else {}
    )
    ordered = [(str(p), str(n)) for p, n in zip(f2[pid_c] if pid_c else [""] * len(f2), f2[name_c])]
    return names, pipes, ordered


def _pipeline(stage: pd.Series, ordered: list[tuple[str, str]], given: bool) -> Pipeline | None:
    """Open stages from the stages file (in order), then Won and Lost."""
    used = [
        s for s in stage.dropna().astype(str).unique() if s not in (PIPEDRIVE_WON, PIPEDRIVE_LOST)
    ]
    if given:
        names: list[str] = []
        for _, n in ordered:
            if n not in names:
                names.append(n)
        extra = [s for s in used if s not in names]
        return Pipeline(
            names + extra,
            [PIPEDRIVE_WON],
            [PIPEDRIVE_LOST],
            notes=(
                "open stages in the stages file's order (order_nr); Won and Lost from the deal "
                "status",
                *([f"stages not in the stages file added last: {extra}"] if extra else []),
            ),
        )
    return None  # inferred from the data by the validation
