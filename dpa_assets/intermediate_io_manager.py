"""Storage of the intermediate assets (``raw_freight``, ``validated_freight``) in the Dagster home.

Dagster's filesystem IO manager, with one change: an input that was never stored (the upstream
day not materialized, or the storage folder cleaned) fails with a message naming the day and what
to run, instead of a ``FileNotFoundError`` on an internal path.
"""

import dagster as dg


class _NamesMissingInputs(dg.IOManager):
    def __init__(self, stored: dg.IOManager):
        self._stored = stored

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        self._stored.handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> object:
        try:
            return self._stored.load_input(context)
        except FileNotFoundError as error:
            raise dg.Failure(description=missing_input_message(context), allow_retries=False) from error


def missing_input_message(context: dg.InputContext) -> str:
    """What the on-call reads when an upstream day is not stored."""
    asset = context.asset_key.to_user_string()
    days = ", ".join(context.asset_partition_keys) if context.has_asset_partitions else "this run"
    first = context.asset_partition_keys[0] if context.has_asset_partitions else "DAY"
    return (
        f"{asset} for {days} is not stored (never materialized, or the Dagster storage was cleaned): "
        f"materialize the whole chain for the day first, e.g. `dpa materialize --date {first}`"
    )


class IntermediateIOManager(dg.FilesystemIOManager):
    """Dagster's filesystem IO manager whose missing inputs say which day to materialize."""

    def create_io_manager(self, context: dg.InitResourceContext) -> dg.IOManager:
        return _NamesMissingInputs(super().create_io_manager(context))
