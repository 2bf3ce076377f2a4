"""The IO manager that commits ``warehouse_facts`` one partition at a time, atomically and audited.

Unlike Dagster's own database IO managers, which delete a slice and append it in separate steps,
the delete, the insert and the audit row here share one transaction: a partition is the old
version or the new one, never a mix.
"""

import time
from datetime import date

import dagster as dg
import pandas as pd

from dpa_assets.intermediate_io_manager import release_stored_output
from dpa_assets.partitions import require_known_partition
from dpa_assets.resources import WarehouseResource
from dpa_assets.warehouse.ledger import (
    LoadRefused,
    PartitionLoad,
    commit_partition,
    read_facts,
    record_failed_attempt,
    record_failure,
)
from dpa_assets.warehouse.tables import facts


def commit_metadata(audit_row: dict, warehouse: str, seconds: float) -> dict[str, object]:
    """What a committed day's materialization records; the reconcile check and the Dagster/warehouse
    cross-check read ``warehouse``, ``partition``, ``row_count`` and ``content_checksum`` back.

    Args:
        audit_row: the audit row the commit wrote.
        warehouse: the warehouse's display URL (password masked).
        seconds: how long the commit took.
    """
    return {
        "table": facts.name,
        "partition": audit_row["partition_date"].isoformat(),
        "warehouse": warehouse,
        "row_count": dg.MetadataValue.int(audit_row["rows_loaded"]),
        "content_checksum": audit_row["content_checksum"],
        "commit_attempts": dg.MetadataValue.int(audit_row["attempts"]),
        "load_seconds": dg.MetadataValue.float(round(seconds, 3)),
    }


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores ``PartitionLoad`` outputs in the warehouse; loads a partition's facts as a DataFrame."""

    warehouse: WarehouseResource

    def handle_output(self, context: dg.OutputContext, obj: PartitionLoad) -> None:
        self._refuse_unless_one_known_day(context, obj)
        started = time.monotonic()
        try:
            audit_row = commit_partition(
                self.warehouse.get_engine(), obj, retry=self.warehouse.retry_settings(), log=context.log
            )
        except LoadRefused as refusal:
            # A broken rule, not an outage: retrying the step cannot change the answer.
            raise dg.Failure(description=str(refusal), allow_retries=False) from refusal
        context.add_output_metadata(
            commit_metadata(audit_row, self.warehouse.display_url(), time.monotonic() - started)
        )
        release_stored_output(context, obj)

    def _refuse_unless_one_known_day(self, context: dg.OutputContext, obj: PartitionLoad) -> None:
        """The guards before a commit; each refusal is audited against the day it concerns."""
        if not context.has_partition_key:
            refusal = LoadRefused("warehouse_facts is committed one partition per run; select a single day")
            for key in context.asset_partition_keys if context.has_asset_partitions else []:
                record_failed_attempt(self.warehouse.get_engine(), date.fromisoformat(key), obj.run_id, refusal)
            raise dg.Failure(description=str(refusal), allow_retries=False)
        day = require_known_partition(context.partition_key)
        if obj.partition_date != day:
            refusal = LoadRefused(f"output for {obj.partition_date} handed over for partition {day}")
            record_failure(self.warehouse.get_engine(), obj, 0, None, refusal)
            raise dg.Failure(description=str(refusal), allow_retries=False)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        days = [date.fromisoformat(key) for key in context.asset_partition_keys]
        return read_facts(self.warehouse.get_engine(), days)
