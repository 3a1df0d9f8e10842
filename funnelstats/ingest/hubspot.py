"""HubSpot deal exports: the wide deals export and the API's dealstage history."""

from __future__ import annotations

import re
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
    currency_notes,
    find_column,
    load_json,
    looks_like_json,
    to_table,
)
from ._io import Source, Table
from ._parse import NAT, parse_timestamps
from .generic import PipelineLike, as_pipeline
from .validate import Mapped, build_funnel

__all__ = ["HUBSPOT_DEFAULT_STAGES", "hubspot_stage_columns", "read_hubspot"]

#: The stages of HubSpot's default deal pipeline: (internal id, label, probability).
HUBSPOT_DEFAULT_STAGES: tuple[tuple[str, str, float], ...] = (
    ("appointmentscheduled", "Appointment Scheduled", 0.2),
    ("qualifiedtobuy", "Qualified To Buy", 0.4),
    ("presentationscheduled", "Presentation Scheduled", 0.6),
    ("decisionmakerboughtin", "Decision Maker Bought-In", 0.8),
    ("contractsent", "Contract Sent", 0.9),
    ("closedwon", "Closed Won", 1.0),
    ("closedlost", "Closed Lost", 0.0),
)

# Date entered "Stage (Pipeline)" / Date entered 'Stage (Pipeline)'
_LABEL = re.compile(
    r"^(?P<what>Date entered|Date exited|Latest time in|Cumulative time in)\s+"
    r"(?P<q>[\"'])(?P<stage>.+) \((?P<pipe>[^()]*)\)(?P=q)\s*$",
    re.IGNORECASE,
)
# hs_date_entered_<id>, hs_v2_date_entered_<id>, hs_v2_latest_time_in_<id>, hs_time_in_<id>
_INTERNAL = re.compile(
    r"^hs_(?P<v2>v2_)?(?P<what>date_entered|date_exited|latest_time_in|cumulative_time_in|time_in)_"
    r"(?P<id>.+)$",
    re.IGNORECASE,
)
_NOT_A_STAGE = {"current_stage", "currentstage"}

_DEAL = ("Record ID", "Deal ID", "hs_object_id", "dealId", "id")
_AMOUNT = ("Amount", "amount")
_CURRENCY = ("Currency", "deal_currency_code", "Deal currency code")
_CREATED = ("Create Date", "createdate", "hs_createdate")
_CLOSE = ("Close Date", "closedate")
_PIPE = ("Pipeline", "pipeline")
_DEFAULT_ATTRS = ("Deal owner", "hubspot_owner_id", "Deal Type", "dealtype")


def hubspot_stage_columns(columns: Sequence[str]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """The per-stage columns of a HubSpot deals export.

    Returns ``{(pipeline, stage): {"entered": [...], "exited": [...], "latest":
    [...], "cumulative": [...]}}``; ``pipeline`` is ``""`` for internal-name
    columns (``hs_v2_date_entered_<stageid>``), where ``stage`` is the id.
    Columns are listed best first (``hs_v2_`` before ``hs_``).

    Examples
    --------
    >>> cols = ['Record ID', 'Date entered "Closed Won (Sales Pipeline)"',
    ...         "Date entered 'Closed Won (Sales Pipeline)'", 'hs_v2_date_entered_closedwon']
    >>> sorted(hubspot_stage_columns(cols))
    [('', 'closedwon'), ('Sales Pipeline', 'Closed Won')]
    """
    out: dict[tuple[str, str], dict[str, list[str]]] = {}
    kinds = {
        "date entered": "entered",
        "date exited": "exited",
        "latest time in": "latest",
        "cumulative time in": "cumulative",
        "date_entered": "entered",
        "date_exited": "exited",
        "latest_time_in": "latest",
        "cumulative_time_in": "cumulative",
        "time_in": "cumulative",
    }
    for c in map(str, columns):
        m = _LABEL.match(c.strip())
        if m:
            key = (m.group("pipe").strip(), m.group("stage").strip())
            kind = kinds[m.group("what").lower()]
            out.setdefault(key, {}).setdefault(kind, []).append(c)
            continue
        m = _INTERNAL.match(c.strip())
        if m and m.group("id").casefold() not in _NOT_A_STAGE:
            key = ("", m.group("id").casefold())
            kind = kinds[m.group("what").lower()]
            cols = out.setdefault(key, {}).setdefault(kind, [])
            cols.insert(0, c) if m.group("v2") else cols.append(c)
    return out


class _Stages:
    """Stage ids -> (pipeline label, stage label, kind, probability, order)."""

    def __init__(self, spec: Any, name: str) -> None:
        self.by_id: dict[str, tuple[str, str]] = {}
        self.pipelines: list[tuple[str, list[dict[str, Any]]]] = []
        self.pipe_ids: dict[str, str] = {}
        self.source = name
        items = spec.get("results", spec) if isinstance(spec, dict) else spec
        if isinstance(items, dict):
            items = [items]
        for p in sorted(items, key=lambda p: float(p.get("displayOrder", 0) or 0)):
            label = str(p.get("label") or p.get("id") or p.get("pipelineId"))
            self.pipe_ids[str(p.get("id") or p.get("pipelineId") or label)] = label
            stages = []
            for s in p.get("stages", []):
                meta = s.get("metadata") or {}
                sid = str(s.get("id") or s.get("stageId"))
                closed = str(meta.get("isClosed", s.get("closed", "false"))).lower() == "true"
                prob = meta.get("probability", s.get("probability"))
                prob = float(prob) if prob not in (None, "") else np.nan
                stages.append(
                    {
                        "id": sid,
                        "label": str(s.get("label")),
                        "order": float(s.get("displayOrder", 0) or 0),
                        "closed": closed or (prob in (0.0, 1.0) and "closed" in sid.lower()),
                        "probability": prob,
                    }
                )
                self.by_id[sid.casefold()] = (label, str(s.get("label")))
            stages.sort(key=lambda s: s["order"])
            self.pipelines.append((label, stages))

    @classmethod
    def default(cls) -> _Stages:
        spec = {
            "results": [
                {
                    "id": "default",
                    "label": "Sales Pipeline",
                    "stages": [
                        {
                            "id": i,
                            "label": lab,
                            "displayOrder": k,
                            "metadata": {"probability": p, "isClosed": i.startswith("closed")},
                        }
                        for k, (i, lab, p) in enumerate(HUBSPOT_DEFAULT_STAGES)
                    ],
                }
            ]
        }
        return cls(spec, "HubSpot's default pipeline")

    def pipeline(self, keep: list[str], qualify: bool) -> Pipeline:
        open_, won, lost, probs = [], [], [], {}
        for label, stages in self.pipelines:
            if label not in keep:
                continue
            for s in stages:
                name = f"{s['label']} ({label})" if qualify else s["label"]
                if not s["closed"]:
                    open_.append(name)
                    if not np.isnan(s["probability"]):
                        probs[name] = s["probability"]
                elif s["probability"] >= 1.0:
                    won.append(name)
                else:
                    lost.append(name)
        return Pipeline(
            open_,
            won,
            lost,
            probabilities=probs,
            notes=(f"stage order, won and lost stages from {self.source}",),
        )


def _load_stages(pipelines: Any) -> _Stages | None:
    if pipelines is None:
        return None
    spec, name = load_json(pipelines)
    return _Stages(spec, name)


def read_hubspot(
    source: Source,
    *,
    pipelines: Any = None,
    pipeline_name: str | None = None,
    pipeline: PipelineLike = None,
    attributes: Sequence[str] | None = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    encoding: str | None = None,
) -> FunnelData:
    """Read a HubSpot deals export or the API's deal-stage history.

    Two layouts are read:

    - the **deals export** (CSV/XLSX), one row per deal with a ``Date entered
      "<Stage> (<Pipeline>)"`` column per stage (older portals write single
      quotes; both may appear in one file), or, in internal-name exports,
      ``hs_v2_date_entered_<stageid>`` / ``hs_date_entered_<stageid>``. Each
      filled cell is one stage entry.
    - the **API history** (JSON): the CRM objects API's deals with
      ``propertiesWithHistory=dealstage`` (and optionally ``amount``), a list
      of ``{value, timestamp, sourceType}`` per deal.

    Parameters
    ----------
    source : path, file object, DataFrame, or parsed JSON
    pipelines : path or parsed JSON, optional
        The pipelines API response (``GET /crm/v3/pipelines/deals``): stage ids,
        labels, display order and ``isClosed`` / ``probability`` metadata. It
        maps numeric stage ids to labels, orders the stages and says which are
        won (closed, probability 1) and lost (closed, probability 0). Without it,
        HubSpot's default pipeline is recognised, other stages are ordered from
        the data and won/lost are read from their names (reported).
    pipeline_name : str, optional
        Read only the deals of this pipeline (by label); deals of other
        pipelines are set aside (rule ``other_pipeline``).
    pipeline : Pipeline, dict or TOML path, optional
        The funnelstats pipeline, overriding what ``pipelines`` gives.
    attributes : list of str, optional
        Deal columns kept as attributes (default: pipeline, owner and type).
    tz, exported_at, strict, on_unknown_stage, encoding
        As in :func:`funnelstats.read_events`. UI exports write times in the
        portal's time zone without saying so: pass ``tz=``.

    Returns
    -------
    FunnelData
        With a ``pipeline`` attribute when the export has a pipeline column.
        When the file holds several pipelines (and no ``pipeline_name``), stage
        names keep their pipeline (``"Closed Won (Renewals)"``) and the stages of
        all pipelines are put in one order, which the ingest report notes: win
        rate and cycle time compare pipelines with ``by="pipeline"``, but
        per-stage conversion needs one pipeline at a time (``pipeline_name=``),
        or deals of one pipeline count as passing the other's stages.

    Notes
    -----
    - The wide export keeps one date per stage (the latest entry), so a deal
      that went back to a stage shows only its last visit; read the API history
      for complete paths.
    - HubSpot stamps a skipped stage as entered at the same instant as the next
      stage, with no time in it (``Date exited`` equal to ``Date entered``, or a
      ``Latest``/``Cumulative time in`` of 0). Such entries are read as skips,
      not stays (rule ``backfilled_stage``). Time-in values (milliseconds in
      exports) are used only for that check; ``Latest time in`` is blank for a
      deal's current stage.
    - Entries carry the deal's current amount (the export has no amount
      history); the API history's ``amount`` versions give one.

    Examples
    --------
    >>> import funnelstats as fs
    >>> rows = pd.DataFrame({
    ...     "Record ID": ["1", "2"],
    ...     'Date entered "Appointment Scheduled (Sales Pipeline)"': ["2024-01-02", "2024-01-03"],
    ...     'Date entered "Closed Won (Sales Pipeline)"': ["2024-01-20", None],
    ... })
    >>> d = fs.read_hubspot(rows, exported_at="2024-02-01")
    >>> d.deals[["deal_id", "outcome", "stage"]]
      deal_id outcome                  stage
    0       1     won             Closed Won
    1       2    open  Appointment Scheduled
    """
    stages = _load_stages(pipelines)
    if looks_like_json(source) and not isinstance(source, pd.DataFrame):
        return _read_history_json(
            source,
            stages,
            pipeline_name=pipeline_name,
            pipeline=pipeline,
            tz=tz,
            exported_at=exported_at,
            strict=strict,
            on_unknown_stage=on_unknown_stage,
        )
    table = to_table(source, encoding)
    f = table.frame
    found = hubspot_stage_columns(list(f.columns))
    if not found:
        raise FunnelDataError(
            'no HubSpot stage columns (Date entered "<Stage> (<Pipeline>)" or '
            "hs_v2_date_entered_<stageid>)",
            file=table.name,
            rule="missing_column",
        )
    deal_c = find_column(table, _DEAL)
    if deal_c is None:
        raise FunnelDataError(
            f"no deal id column (looked for {list(_DEAL)}). Columns found: {list(f.columns)}",
            file=table.name,
            rule="missing_column",
        )
    known = stages or _Stages.default()
    # every stage key as (pipeline label, stage label)
    keys: dict[tuple[str, str], tuple[str, str]] = {}
    unmapped = []
    for pipe, stage in found:
        if pipe:
            keys[(pipe, stage)] = (pipe, stage)
        elif stage in known.by_id:
            keys[(pipe, stage)] = known.by_id[stage]
        else:
            keys[(pipe, stage)] = ("", stage)
            unmapped.append(stage)
    notes = [f"{table.name}: HubSpot deals export, {len(found)} stage column group(s)"]
    if unmapped:
        notes.append(
            f"stage id(s) {unmapped} are not in {known.source}: kept as ids; pass pipelines= "
            "(the pipelines API response) to name them"
        )
    entered = {k: _coalesce(f, v.get("entered", [])) for k, v in found.items()}
    present = sorted(
        {keys[k][0] for k, e in entered.items() if (~blank(e)).any() and keys[k][0]},
        key=lambda p: (
            [lab for lab, _ in known.pipelines].index(p)
            if p in [lab for lab, _ in known.pipelines]
            else 10**6
        ),
    )
    pipe_c = find_column(table, _PIPE)
    pre = []
    if pipeline_name is not None:
        if pipeline_name not in present:
            raise FunnelDataError(
                f"no stage columns of pipeline {pipeline_name!r}; pipelines in the file: {present}",
                file=table.name,
                rule="missing_column",
            )
        if pipe_c:
            other = f[pipe_c].astype("string").str.strip().ne(pipeline_name)
            other = other.to_numpy(dtype=bool, na_value=True)
        else:
            mine = [k for k in found if keys[k][0] == pipeline_name]
            other = np.logical_and.reduce([blank(entered[k]) for k in mine])
        if other.any():
            pre.append((other, "other_pipeline", pipe_c, f"not in pipeline {pipeline_name!r}"))
        found = {k: v for k, v in found.items() if keys[k][0] in (pipeline_name, "")}
        keep = [pipeline_name]
    else:
        keep = present
    qualify = len(keep) > 1

    def name_of(k: tuple[str, str]) -> str:
        p, s = keys[k]
        return f"{s} ({p})" if qualify and p else s

    # melt: one mapped row per filled "Date entered" cell
    pos_parts, stage_parts, at_parts = [], [], []
    backfilled = np.zeros(len(f), dtype=bool)
    ns = {k: parse_timestamps(entered[k]).ns for k in found}
    for k, cols in found.items():
        e = entered[k]
        filled = ~blank(e)
        zero = _zero_time(f, cols, ns[k], tz)
        # entered at the same instant as another stage of the deal, with no time in it
        same = np.zeros(len(f), dtype=bool)
        for k2 in found:
            if k2 != k:
                same |= (ns[k2] == ns[k]) & (ns[k] != NAT)
        drop = filled & zero & same
        backfilled |= drop
        w = np.flatnonzero(filled & ~drop)
        pos_parts.append(w)
        stage_parts.append(np.full(len(w), name_of(k), dtype=object))
        at_parts.append(e.iloc[w].to_numpy(dtype=object))
    pos = np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64)
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    stage = pd.Series(np.concatenate(stage_parts)[order], dtype="string")
    at = pd.Series(np.concatenate(at_parts)[order], dtype="string")

    def take(c: str | None) -> pd.Series | None:
        return None if c is None else f[c].iloc[pos].reset_index(drop=True)

    amount_c = find_column(table, _AMOUNT)
    cur_c = find_column(table, _CURRENCY)
    created_c = find_column(table, _CREATED)
    close_c = find_column(table, _CLOSE)
    attr_cols = list(attributes) if attributes is not None else []
    if attributes is None:
        attr_cols = [c for c in (find_column(table, (a,)) for a in _DEFAULT_ATTRS) if c]
    attrs = pd.DataFrame(index=range(len(pos)))
    if pipe_c:
        ids = {"default": "Sales Pipeline", **known.pipe_ids}
        attrs["pipeline"] = (
            take(pipe_c).map(lambda p: ids.get(p, p)).to_numpy(dtype=object, na_value=None)
        )
    elif present:
        attrs["pipeline"] = _pipeline_per_row(found, keys, entered, len(f))[pos]
    for c in attr_cols:
        if c not in f.columns:
            raise FunnelDataError(f"no attribute column {c!r}", file=table.name, column=c)
        attrs[c] = take(c).to_numpy(dtype=object, na_value=None)
    source_notes = []
    if backfilled.any():
        source_notes.append(
            (
                backfilled,
                "backfilled_stage",
                None,
                "stage entered at the same instant as the next one with no time in it: a skip",
            )
        )
    pipe = as_pipeline(pipeline)
    if pipe is None:
        pipe = _pipeline_for(known, keep, qualify, stage, stages is not None)
    currency = take(cur_c)
    notes += currency_notes(currency)
    if qualify:
        notes.append(
            f"{len(keep)} pipelines in one file ({', '.join(keep)}): their stages are put in one "
            "order, so per-stage conversion and skipped stages mix pipelines (a deal of one "
            "is counted as passing the other's earlier stages). For per-stage figures read "
            "each pipeline with pipeline_name=; win rate and cycle time compare them with "
            "by='pipeline'"
        )
    mapped = Mapped(
        table=table,
        layout="hubspot",
        deal=f[deal_c].iloc[pos].reset_index(drop=True),
        stage=stage,
        at=at,
        amount=take(amount_c),
        close_date=take(close_c),
        currency=currency,
        attributes=attrs if len(attrs.columns) else None,
        pos=pos,
        created=take(created_c),
        columns={
            "deal": deal_c,
            "stage": "Date entered",
            "at": "Date entered",
            "amount": amount_c or "",
            "close_date": close_c or "",
            "currency": cur_c or "",
        },
        pre_quarantine=pre,
        source_notes=source_notes,
        notes=notes,
    )
    return build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz,
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
    )


def _coalesce(f: pd.DataFrame, cols: list[str]) -> pd.Series:
    """The first non-empty value across columns (best column first)."""
    if not cols:
        return pd.Series(pd.NA, index=range(len(f)), dtype="string")
    out = f[cols[0]].astype("string").reset_index(drop=True)
    for c in cols[1:]:
        nxt = f[c].astype("string").reset_index(drop=True)
        out = out.where(~pd.Series(blank(out)), nxt)
    return out


def _zero_time(f: pd.DataFrame, cols: dict[str, list[str]], entered_ns: np.ndarray, tz: Any) -> Any:
    """True where the export shows no time spent in the stage."""
    zero = np.zeros(len(f), dtype=bool)
    exited = cols.get("exited", [])
    if exited:
        ex = parse_timestamps(_coalesce(f, exited)).ns
        zero |= (ex == entered_ns) & (ex != NAT)
    for kind in ("latest", "cumulative"):
        for c in cols.get(kind, []):
            v = pd.to_numeric(f[c].astype("string").str.strip(), errors="coerce")
            zero |= (v == 0).to_numpy(dtype=bool, na_value=False)
    return zero


def _pipeline_per_row(
    found: dict[tuple[str, str], Any],
    keys: dict[tuple[str, str], tuple[str, str]],
    entered: dict[tuple[str, str], pd.Series],
    n: int,
) -> np.ndarray:
    """Each deal's pipeline: the pipeline of its filled stage columns."""
    out = np.full(n, None, dtype=object)
    for k in found:
        p = keys[k][0]
        if p:
            out[~blank(entered[k])] = p
    return out


def _pipeline_for(
    known: _Stages, keep: list[str], qualify: bool, stage: pd.Series, given: bool
) -> Pipeline | None:
    """The pipeline from the pipelines file or the default pipeline, if they cover the data."""
    if keep:
        pipe = known.pipeline(keep, qualify)
        names = set(stage.dropna().unique())
        if names and names <= set(pipe.order):
            if not given:
                pipe = pipe.with_notes(
                    "won and lost stages of HubSpot's default pipeline (Closed Won, Closed Lost); "
                    "pass pipelines= for your own"
                )
            return pipe
    return None  # inferred from the data by the validation (won/lost by name, reported)


def _read_history_json(
    source: Any,
    stages: _Stages | None,
    *,
    pipeline_name: str | None,
    pipeline: PipelineLike,
    tz: str | None,
    exported_at: Any,
    strict: bool,
    on_unknown_stage: str,
) -> FunnelData:
    """Deals with ``propertiesWithHistory`` -> FunnelData (one row per version)."""
    data, name = load_json(source)
    deals = data.get("results", data) if isinstance(data, dict) else data
    if isinstance(deals, dict):
        deals = [deals]
    recs = []
    for d in deals:
        did = str(d.get("id") or d.get("dealId") or d.get("hs_object_id"))
        props = d.get("properties") or {}
        hist = d.get("propertiesWithHistory") or {}
        for prop in ("dealstage", "amount"):
            for v in hist.get(prop, []):
                recs.append(
                    {
                        "deal_id": did,
                        "property": prop,
                        "value": None if v.get("value") is None else str(v.get("value")),
                        "timestamp": str(v.get("timestamp")),
                        "sourceType": v.get("sourceType"),
                        "pipeline": props.get("pipeline"),
                        "createdate": props.get("createdate"),
                        "deal_currency_code": props.get("deal_currency_code"),
                    }
                )
    if not recs:
        raise FunnelDataError(
            "no dealstage history: request the deals with propertiesWithHistory=dealstage",
            file=name,
            rule="missing_column",
        )
    frame = pd.DataFrame(recs).astype("string[pyarrow]")
    table = Table(frame, name, np.arange(len(frame)) + 1, row_word="history entry")
    known = stages or _Stages.default()
    is_stage = frame["property"].eq("dealstage").to_numpy(dtype=bool)
    sid = frame["value"].astype("string").str.strip()
    pipes = {"default": "Sales Pipeline", **known.pipe_ids}
    pipe_label = frame["pipeline"].map(lambda p: pipes.get(p, p) if p is not None else None)
    label = sid.str.casefold().map(lambda s: known.by_id.get(s, (None, None))[1])
    unmapped = sorted(set(sid[is_stage & label.isna().to_numpy()].dropna()))
    stage = label.where(label.notna(), sid).where(pd.Series(is_stage), pd.NA).astype("string")
    keep = sorted(set(pipe_label.dropna())) if pipeline_name is None else [pipeline_name]
    qualify = len(keep) > 1
    if qualify:
        stage = (stage + " (" + pipe_label.astype("string") + ")").astype("string")
    pre = []
    if pipeline_name is not None:
        other = pipe_label.ne(pipeline_name).to_numpy(dtype=bool, na_value=True)
        if other.any():
            pre.append((other, "other_pipeline", "pipeline", f"not in pipeline {pipeline_name!r}"))
    notes = [f"{name}: HubSpot dealstage history (propertiesWithHistory)"]
    if unmapped:
        notes.append(
            f"stage id(s) {unmapped} are not in {known.source}: kept as ids; pass pipelines="
        )
    pipe = as_pipeline(pipeline)
    if pipe is None and keep and all(k in [lab for lab, _ in known.pipelines] for k in keep):
        pipe = _pipeline_for(known, keep, qualify, stage[is_stage], stages is not None)
    amount = carry_forward(
        frame["deal_id"],
        frame["timestamp"],
        frame["value"].where(pd.Series(~is_stage)),
        ~is_stage,
        updates_first=True,
    )
    currency = frame["deal_currency_code"]
    notes += currency_notes(currency)
    mapped = Mapped(
        table=table,
        layout="hubspot",
        deal=frame["deal_id"],
        stage=stage,
        at=frame["timestamp"],
        amount=amount,
        currency=currency if currency.notna().any() else None,
        attributes=pd.DataFrame({"pipeline": pipe_label.to_numpy(dtype=object)}),
        update_only=~is_stage,
        created=frame["createdate"],
        columns={"deal": "id", "stage": "dealstage", "at": "timestamp", "amount": "amount"},
        pre_quarantine=pre,
        notes=notes,
    )
    return build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz,
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
    )
