"""Dynamics 365 Sales: opportunities, with business-process-flow stages or an audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data import FunnelData
from ..errors import FunnelDataError
from ..pipeline import Pipeline
from ._crm import ChangeLog, blank, carry_forward, combine, currency_notes, find_column, to_table
from ._io import Source
from ._parse import parse_timestamps
from .generic import PipelineLike, as_pipeline
from .validate import Mapped, build_funnel, resolve_column

__all__ = ["DYNAMICS_LOST", "DYNAMICS_STATUS_REASONS", "DYNAMICS_WON", "read_dynamics"]

DYNAMICS_WON = "Won"
DYNAMICS_LOST = "Lost"
#: The opportunity's default status reasons (``statuscode``).
DYNAMICS_STATUS_REASONS = {
    "1": "In Progress",
    "2": "On Hold",
    "3": "Won",
    "4": "Canceled",
    "5": "Out-Sold",
}
_STATE = {"0": "open", "1": "won", "2": "lost", "open": "open", "won": "won", "lost": "lost"}
_SALES_STAGE = {"0": "Qualify", "1": "Develop", "2": "Propose", "3": "Close"}
_FMT = "@OData.Community.Display.V1.FormattedValue"

_BPF_DEAL = ("bpf_opportunityid", "_bpf_opportunityid_value", "opportunityid", "Opportunity")
_BPF_STAGE = (
    "activestageid" + _FMT,
    "_activestageid_value" + _FMT,
    "stagename",
    "Active Stage",
    "activestageid",
)
_BPF_START = ("activestagestartedon", "Active Stage Started On")
_AUDIT_DEAL = ("objectid", "_objectid_value", "Record", "opportunityid")
_AUDIT_FIELD = ("Changed Field", "attributename", "attributelogicalname", "field")
_AUDIT_OLD = ("Old Value", "oldvalue", "old_value")
_AUDIT_NEW = ("New Value", "newvalue", "new_value")
_AUDIT_AT = ("Changed Date", "changedon", "createdon")
_STAGE_FIELDS = ("stepname", "Pipeline Phase", "activestageid", "Active Stage", "Process Stage")


def read_dynamics(
    source: Source,
    *,
    stages: Source | None = None,
    attributes: Sequence[str] | None = None,
    pipeline: PipelineLike = None,
    tz: str | None = None,
    exported_at: Any = None,
    strict: bool = False,
    on_unknown_stage: str = "error",
    encoding: str | None = None,
) -> FunnelData:
    """Read a Dynamics 365 ``opportunity`` export, with stage records when given.

    Dynamics keeps the outcome in ``statecode`` (0 open, 1 won, 2 lost, or the
    labels) apart from the sales stage (``stepname`` / ``salesstagecode``);
    funnelstats adds the terminal stages ``"Won"`` and ``"Lost"``, entered at
    ``actualclosedate``.

    Parameters
    ----------
    source : path, file object, or DataFrame
        The opportunity export: ``opportunityid, name, stepname,
        salesstagecode, statecode, statuscode, estimatedvalue, actualvalue,
        estimatedclosedate, actualclosedate, createdon`` (Web API names).
    stages : path, file object, or DataFrame, optional
        Either business-process-flow stage records (``bpf_opportunityid`` or
        ``_bpf_opportunityid_value``, ``activestageid`` with its formatted value
        or a stage name, ``activestagestartedon``, ``completedon``), each an
        entry into the active stage; or an audit export of stage changes
        (``objectid``, ``Changed Field`` / ``attributename``, ``Old Value``,
        ``New Value``, ``Changed Date``) for ``stepname`` / active stage.
    attributes : list of str, optional
        Opportunity columns kept as attributes (default: ``statuscode`` as
        ``status_reason``, and owner and customer where present).
    pipeline, tz, exported_at, strict, on_unknown_stage, encoding
        As in :func:`funnelstats.read_events`.

    Returns
    -------
    FunnelData
        Without stage records only the current stage is known, entered at
        ``createdon``; ``has_stage_history`` is then False.

    Examples
    --------
    >>> import funnelstats as fs
    >>> opp = pd.DataFrame({
    ...     "opportunityid": ["a", "b"], "stepname": ["3-Propose", "1-Qualify"],
    ...     "statecode": ["1", "0"], "createdon": ["2024-01-02T10:00:00Z", "2024-01-05T10:00:00Z"],
    ...     "actualclosedate": ["2024-02-01", None],
    ... })
    >>> fs.read_dynamics(opp, exported_at="2024-03-01").deals[["deal_id", "outcome"]]
      deal_id outcome
    0       a     won
    1       b    open
    """
    opp_t = to_table(source, encoding)
    o = opp_t.frame.reset_index(drop=True)
    id_c = resolve_column(opp_t, None, ("opportunityid", "Opportunity"), "deal")
    state_c = resolve_column(opp_t, None, ("statecode", "Status"), "statecode")
    created_c = resolve_column(opp_t, None, ("createdon", "Created On"), "created")
    step_c = find_column(opp_t, ("stepname", "Pipeline Phase"))
    ssc_c = find_column(opp_t, ("salesstagecode" + _FMT, "salesstagecode", "Sales Stage"))
    status_c = find_column(opp_t, ("statuscode" + _FMT, "statuscode", "Status Reason"))
    est_c = find_column(opp_t, ("estimatedvalue", "Est. Revenue"))
    act_c = find_column(opp_t, ("actualvalue", "Actual Revenue"))
    estclose_c = find_column(opp_t, ("estimatedclosedate", "Est. Close Date"))
    actclose_c = find_column(opp_t, ("actualclosedate", "Actual Close Date"))
    mod_c = find_column(opp_t, ("modifiedon", "Modified On"))
    cur_c = find_column(
        opp_t,
        (
            "transactioncurrencyid" + _FMT,
            "_transactioncurrencyid_value" + _FMT,
            "isocurrencycode",
            "Currency",
        ),
    )
    ids = o[id_c].astype("string").str.strip().str.lower()
    n_opp = len(o)
    state = o[state_c].astype("string").str.strip().str.lower().map(_STATE)
    unknown_state = state.isna() & ~pd.Series(blank(o[state_c]))
    if unknown_state.any():
        bad = o[state_c][unknown_state].iloc[0]
        raise opp_t.error(
            f"statecode {bad!r} is not 0/1/2 (Open/Won/Lost)",
            position=int(np.flatnonzero(unknown_state)[0]),
            column=state_c,
            rule="unknown_stage",
        )
    current = _current_stage(o, step_c, ssc_c)
    notes = [f"{opp_t.name}: Dynamics 365 opportunity export"]

    st_t = None if stages is None else to_table(stages, encoding)
    table = combine([opp_t, st_t]) if st_t is not None else opp_t
    n_all = len(table.frame)
    parts: list[pd.DataFrame] = []
    source_notes = []
    first_stage = current.copy()
    has_history = st_t is not None
    opp_rows_used = np.ones(n_opp, dtype=bool)
    if st_t is not None:
        s = st_t.frame.reset_index(drop=True)
        spos = np.arange(len(s)) + n_opp
        if find_column(st_t, _AUDIT_FIELD) and find_column(st_t, _AUDIT_NEW):
            log = ChangeLog(
                s,
                deal=resolve_column(st_t, None, _AUDIT_DEAL, "deal"),
                field=resolve_column(st_t, None, _AUDIT_FIELD, "field"),
                old=resolve_column(st_t, None, _AUDIT_OLD, "old value"),
                new=resolve_column(st_t, None, _AUDIT_NEW, "new value"),
                at=resolve_column(st_t, None, _AUDIT_AT, "time"),
                stage_fields=_STAGE_FIELDS,
                amount_fields=("estimatedvalue", "Est. Revenue"),
                close_fields=("estimatedclosedate", "Est. Close Date"),
                rows=spos,
                created=pd.Series(o[created_c].astype("string").to_numpy(), index=ids.to_numpy()),
                created_pos=pd.Series(np.arange(n_opp), index=ids.to_numpy()),
            )
            log_deal = log.deal.str.lower()
            parts.append(
                pd.DataFrame(
                    {
                        "pos": log.pos,
                        "deal": log_deal.to_numpy(),
                        "stage": log.stage.to_numpy(),
                        "at": log.at.to_numpy(),
                        "amount": log.amount.to_numpy(),
                        "update": log.update_only,
                    }
                )
            )
            placed = set(log_deal[~log.update_only & (log.pos < n_opp)].dropna())
            opp_rows_used = ~ids.isin(placed).to_numpy(dtype=bool, na_value=False)
            nu = np.zeros(n_all, dtype=bool)
            nu[n_opp:] = log.not_used
            if nu.any():
                source_notes.append(
                    (
                        nu,
                        "field_not_used",
                        None,
                        "audit row about a field other than the stage, "
                        "estimated value or estimated close date",
                    )
                )
            notes.append(f"{st_t.name}: audit log of stage changes")
        else:
            sdeal_c = resolve_column(st_t, None, _BPF_DEAL, "deal")
            sstage_c = resolve_column(st_t, None, _BPF_STAGE, "stage")
            sstart_c = resolve_column(st_t, None, _BPF_START, "time")
            sdeal = s[sdeal_c].astype("string").str.strip().str.lower()
            parts.append(
                pd.DataFrame(
                    {
                        "pos": spos,
                        "deal": sdeal.to_numpy(),
                        "stage": s[sstage_c].astype("string").str.strip().to_numpy(),
                        "at": s[sstart_c].to_numpy(),
                        "amount": pd.NA,
                        "update": False,
                    }
                )
            )
            # each opportunity starts in its earliest recorded stage
            t = parse_timestamps(s[sstart_c]).ns
            o_ = np.lexsort((t, pd.factorize(sdeal)[0]))
            earliest = (
                pd.DataFrame(
                    {"deal": sdeal.iloc[o_].to_numpy(), "stage": s[sstage_c].iloc[o_].to_numpy()}
                )
                .drop_duplicates("deal")
                .set_index("deal")["stage"]
            )
            got = ids.isin(earliest.index).to_numpy(dtype=bool, na_value=False)
            first_stage[got] = earliest.reindex(ids[got].to_numpy()).astype("string").to_numpy()
            notes.append(f"{st_t.name}: business process flow stage records")
    est = o[est_c].astype("string") if est_c else pd.Series(pd.NA, index=o.index, dtype="string")
    act = o[act_c].astype("string") if act_c else pd.Series(pd.NA, index=o.index, dtype="string")
    final = act.where(~pd.Series(blank(act)), est)
    rows = np.arange(n_opp)
    use = opp_rows_used
    parts.insert(
        0,
        pd.DataFrame(
            {
                "pos": rows[use],
                "deal": ids[use].to_numpy(),
                "stage": first_stage[use].to_numpy(dtype=object),
                "at": o[created_c][use].to_numpy(dtype=object),
                "amount": est[use].to_numpy(dtype=object),
                "update": False,
            }
        ),
    )
    closed_at = o[actclose_c].astype("string") if actclose_c else pd.Series(pd.NA, index=o.index)
    if mod_c:
        closed_at = closed_at.where(~pd.Series(blank(closed_at)), o[mod_c].astype("string"))
    for outcome, name in (("won", DYNAMICS_WON), ("lost", DYNAMICS_LOST)):
        mask = state.eq(outcome).to_numpy(dtype=bool, na_value=False)
        parts.append(
            pd.DataFrame(
                {
                    "pos": rows[mask],
                    "deal": ids[mask].to_numpy(),
                    "stage": name,
                    "at": closed_at[mask].to_numpy(dtype=object),
                    "amount": final[mask].to_numpy(dtype=object),
                    "update": False,
                }
            )
        )
    m = pd.concat(parts, ignore_index=True).sort_values("pos", kind="stable")
    m = m.reset_index(drop=True)
    # entries placed from an opportunity row without an amount take its estimated value
    est_by = pd.Series(est.to_numpy(), index=ids.to_numpy())
    est_by = est_by[~est_by.index.duplicated(keep="last")]
    fill = (m["pos"].to_numpy() < n_opp) & blank(m["amount"].astype("string"))
    m.loc[fill, "amount"] = est_by.reindex(m.loc[fill, "deal"].to_numpy()).to_numpy()
    upd = m["update"].to_numpy(dtype=bool)
    amount = carry_forward(m["deal"], m["at"], m["amount"].astype("string"), upd)

    by_id = o.assign(_id=ids.to_numpy()).drop_duplicates("_id", keep="last").set_index("_id")
    attrs = pd.DataFrame(index=range(len(m)))
    if attributes is None:
        if status_c:
            reason = by_id[status_c].astype("string").str.strip()
            attrs["status_reason"] = (
                reason.map(lambda v: DYNAMICS_STATUS_REASONS.get(v, v) if v is not pd.NA else None)
                .reindex(m["deal"].to_numpy())
                .to_numpy(dtype=object)
            )
        for c in (
            find_column(opp_t, ("_ownerid_value" + _FMT, "ownerid" + _FMT, "Owner")),
            find_column(
                opp_t, ("_customerid_value" + _FMT, "customerid" + _FMT, "Potential Customer")
            ),
        ):
            if c:
                attrs[c.split("@")[0].strip("_").removesuffix("_value")] = (
                    by_id[c].reindex(m["deal"].to_numpy()).to_numpy(dtype=object)
                )
    else:
        for c in attributes:
            if c not in o.columns:
                raise FunnelDataError(f"no attribute column {c!r}", file=opp_t.name, column=c)
            attrs[c] = by_id[c].reindex(m["deal"].to_numpy()).to_numpy(dtype=object)
    currency = None
    if cur_c:
        currency = (
            by_id[cur_c].astype("string").reindex(m["deal"].to_numpy()).reset_index(drop=True)
        )
        notes += currency_notes(o[cur_c])
    close = None
    if estclose_c:
        close = by_id[estclose_c].astype("string").reindex(m["deal"].to_numpy())
        close = close.reset_index(drop=True)
    pipe = as_pipeline(pipeline)
    if pipe is None:
        pipe = _pipeline(m["stage"])
    if not has_history:
        notes.append(
            "no stage records given: each opportunity is placed in its current stage at createdon "
            "(pass stages= with business process flow records or an audit export)"
        )
    mapped = Mapped(
        table=table,
        layout="dynamics",
        deal=m["deal"].astype("string"),
        stage=m["stage"].astype("string"),
        at=m["at"].astype("string"),
        amount=amount,
        close_date=close,
        currency=currency,
        attributes=attrs if len(attrs.columns) else None,
        pos=m["pos"].to_numpy(dtype=np.int64),
        update_only=upd,
        created=by_id[created_c]
        .astype("string")
        .reindex(m["deal"].to_numpy())
        .reset_index(drop=True),
        columns={
            "deal": id_c,
            "stage": step_c or "stepname",
            "at": created_c,
            "amount": est_c or "",
            "close_date": estclose_c or "",
            "currency": cur_c or "",
        },
        source_notes=source_notes,
        notes=notes,
        has_stage_history=has_history,
    )
    return build_funnel(
        mapped,
        pipeline=pipe,
        tz=tz or "UTC",
        strict=strict,
        exported_at=exported_at,
        on_unknown_stage=on_unknown_stage,
    )


def _current_stage(o: pd.DataFrame, step_c: str | None, ssc_c: str | None) -> pd.Series:
    """stepname, else the salesstagecode's label."""
    out = pd.Series(pd.NA, index=o.index, dtype="string")
    if step_c:
        out = o[step_c].astype("string").str.strip()
    if ssc_c:
        code = o[ssc_c].astype("string").str.strip()
        lab = code.map(lambda v: _SALES_STAGE.get(v, v) if v is not pd.NA else v).astype("string")
        out = out.where(~pd.Series(blank(out), index=o.index), lab)
    return out


def _pipeline(stage: pd.Series) -> Pipeline:
    """Open stages ordered by their leading number (``1-Qualify``), then Won and Lost."""
    import re

    names = [
        s for s in stage.dropna().astype(str).unique() if s not in (DYNAMICS_WON, DYNAMICS_LOST)
    ]
    default = list(_SALES_STAGE.values())

    def key(s: str) -> tuple[float, str]:
        m = re.match(r"^\s*(\d+)", s)
        if m:
            return (float(m.group(1)), s)
        return (float(default.index(s)) if s in default else np.inf, s)

    ordered = sorted(names, key=key)
    return Pipeline(
        ordered,
        [DYNAMICS_WON],
        [DYNAMICS_LOST],
        notes=(
            "open stages ordered by their number (1-Qualify, 2-Develop, ...) or the default "
            "sales stages; Won and Lost from statecode; pass pipeline= to fix the order",
        ),
    )
