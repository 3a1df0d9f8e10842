"""Column names of the tables funnelstats builds, defined once."""

from __future__ import annotations

# tidy event table: one row per deal per stage entry
DEAL_ID = "deal_id"
STAGE = "stage"
ENTERED_AT = "entered_at"
EXITED_AT = "exited_at"
NEXT_STAGE = "next_stage"
AMOUNT = "amount"
EVENT_COLUMNS: tuple[str, ...] = (DEAL_ID, STAGE, ENTERED_AT, EXITED_AT, NEXT_STAGE, AMOUNT)

# deals table: one row per deal
CREATED_AT = "created_at"
OUTCOME = "outcome"
CLOSED_AT = "closed_at"
FURTHEST_STAGE = "furthest_stage"
CURRENCY = "currency"
DEAL_COLUMNS: tuple[str, ...] = (
    DEAL_ID,
    CREATED_AT,
    OUTCOME,
    CLOSED_AT,
    AMOUNT,
    STAGE,
    FURTHEST_STAGE,
)

# history table: one row per kept input row (stage changes and field updates)
AT = "at"
CLOSE_DATE = "close_date"
HISTORY_COLUMNS: tuple[str, ...] = (DEAL_ID, AT, STAGE, AMOUNT, CLOSE_DATE)

# outcomes
WON = "won"
LOST = "lost"
OPEN = "open"
OUTCOMES: tuple[str, ...] = (WON, LOST, OPEN)
