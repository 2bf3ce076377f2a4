"""SQLAlchemy Core definitions of the three protected warehouse tables."""

from __future__ import annotations

import sqlalchemy as sa

from dpa_assets.settings import AUDIT_TABLE, FACT_TABLE, REJECT_TABLE

metadata = sa.MetaData()

facts = sa.Table(
    FACT_TABLE,
    metadata,
    sa.Column("partition_date", sa.Date, nullable=False, index=True),
    # Unique across all days: a shipment is billed once, whatever day it was loaded for.
    sa.Column("shipment_id", sa.String(64), nullable=False, unique=True),
    sa.Column("waybill_number", sa.String(64), nullable=False),
    sa.Column("wagon_number", sa.String(12), nullable=False),
    sa.Column("origin_station", sa.String(8), nullable=False),
    sa.Column("destination_station", sa.String(8), nullable=False),
    sa.Column("commodity", sa.String(32), nullable=False),
    sa.Column("net_tonnage", sa.Float, nullable=False),
    sa.Column("wagon_count", sa.Integer, nullable=False),
    sa.Column("departure_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("arrival_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("customer", sa.String(200), nullable=False),
    sa.Column("revenue_xaf", sa.BigInteger, nullable=False),
    sa.Column("load_run_id", sa.String(64), nullable=False),
)

rejects = sa.Table(
    REJECT_TABLE,
    metadata,
    sa.Column("partition_date", sa.Date, nullable=False, index=True),
    sa.Column("validation_run_id", sa.String(64), nullable=False),
    sa.Column("source_line", sa.Integer, nullable=False),
    sa.Column("shipment_id", sa.String(200), nullable=True),
    sa.Column("raw_record", sa.Text, nullable=False),  # JSON: every received value, as text
    sa.Column("reasons", sa.Text, nullable=False),  # JSON: [{column, rule, value}, ...]
    sa.Column("reason_summary", sa.Text, nullable=False),
)

audit = sa.Table(
    AUDIT_TABLE,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("partition_date", sa.Date, nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("validation_run_id", sa.String(64), nullable=True),
    # validated | blocked | loaded | failed | break_glass
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_received", sa.Integer, nullable=True),
    sa.Column("rows_valid", sa.Integer, nullable=True),
    sa.Column("rows_rejected", sa.Integer, nullable=True),
    sa.Column("rows_loaded", sa.Integer, nullable=True),
    sa.Column("content_checksum", sa.String(64), nullable=True),
    # PostgreSQL: the stored day's digest as the database computed it in the commit transaction
    # (protection.FACTS_DIGEST_FUNCTION); NULL on SQLite and for days loaded before it existed.
    sa.Column("warehouse_digest", sa.String(120), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),  # the error of a failed attempt, or a break-glass reason
)
