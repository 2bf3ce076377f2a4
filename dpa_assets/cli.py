"""``dpa``: the operator's command line (seed demo data, load days through Dagster, inspect the ledger)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import date, timedelta
from pathlib import Path

from dpa_assets.settings import BACKFILL_DAYS_TAG, BACKFILL_JOB, BACKFILL_OP, ENV_LANDING_DIR

BACKFILL_HINT_DAYS = 7  # above this, `dpa materialize` mentions `dpa backfill`


class OperatorError(Exception):
    """Something the operator must change; printed as one line, exit 2."""


class _OneLineParser(argparse.ArgumentParser):
    """A mistyped command is one line and exit 2, like every other operator error."""

    def error(self, message: str) -> None:  # type: ignore[override] - exits, as argparse's does
        self.exit(2, f"error: {self.prog}: {message} (`{self.prog} --help` shows the usage)\n")


def _day(text: str) -> date:
    """A day typed as YYYY-MM-DD, nothing looser (``date.fromisoformat`` also takes ``20261125``)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text)
    except ValueError:
        pass  # right shape, no such day (2026-11-31): the same message
    raise argparse.ArgumentTypeError(f"{text!r} is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25")


def _port(text: str) -> int:
    """A TCP port number, 1 to 65535 (the socket would refuse anything else with a traceback)."""
    if not re.fullmatch(r"\d+", text.strip()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return int(text)


def _count(text: str) -> int:
    """A number of days or lines: a whole number of 1 or more (0 or -1 would silently do nothing)."""
    if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: give a whole number of 1 or more")
    return int(text)


def _dagster_home() -> Path:
    """Use ``DAGSTER_HOME`` or ``./.dagster_home``, and export it so every part agrees.

    Checks the DPA settings first: every command that builds the code location comes through here.
    """
    from dpa_assets.configuration import configuration_problems

    problems = configuration_problems()
    if problems:
        raise OperatorError("; ".join(problems))
    from dpa_assets.instance import install_instance_yaml

    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    install_instance_yaml(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _instance():  # noqa: ANN202 - Dagster imported lazily
    """The home's Dagster instance, after checking the variables its ``dagster.yaml`` reads are set.

    Dagster would otherwise stop with one traceback per missing variable (production's ``DAGSTER_PG_*``).
    """
    import dagster as dg

    from dpa_assets.configuration import instance_env_problem

    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")
    problem = instance_env_problem(home / "dagster.yaml")
    if problem:
        raise OperatorError(problem)
    return dg.DagsterInstance.get()


def _recent_days(count: int, end: date | None) -> list[date]:
    from dpa_assets.partitions import daily_partitions

    last = end or date.fromisoformat(daily_partitions.get_last_partition_key())
    return [last - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


# A day whose landing file is not there: re-loading it would only fail a run and page again.
NOT_DELIVERED_HINT = "not delivered yet: no landing file; catch-up loads it once it arrives (or dpa materialize)"


def _landing_dir(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get(ENV_LANDING_DIR) or _dagster_home() / "landing")


def cmd_seed_landing(args: argparse.Namespace) -> int:
    from dpa_assets.sources.generator import generate_day, write_landing_file

    landing = _landing_dir(args.landing_dir)
    for day in _recent_days(args.days, args.end):
        generated = generate_day(day, seed=args.seed)
        path = write_landing_file(landing, generated)
        print(f"{day}  {len(generated.records):4d} rows ({generated.bad_count} made bad)  -> {path}")
    return 0


def run_config_for(verbose: bool, step_retry: bool) -> dict:
    """Run config of a hand-launched load: quiet unless asked, and optionally no step retries."""
    config: dict = {}
    if not verbose:
        # dpa prints each day's outcome itself; Dagster's step logs and stack traces stay in the
        # run's event log (the UI) and appear here with --verbose.
        config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    if not step_retry:
        # The on-call at the keyboard wants the verdict now, not after the nightly RetryPolicy's waits.
        config["resources"] = {"freight_source": {"config": _freight_source_config(retry_step_on_outage=False)}}
    return config


def _freight_source_config(**fields: object) -> dict:
    """The freight source's run config: these fields, and its variables bound again (names, never values).

    A run's resource config replaces the one of the definitions whole: without the bindings the API
    source would lose its URL and token.
    """
    from dpa_assets.deployments import current_deployment, current_freight_source, freight_source_env_fields

    bound = freight_source_env_fields(current_deployment(), current_freight_source())
    return {**{field: {"env": name} for field, name in bound.items()}, **fields}


def _require_freight_days(days: list[date]) -> None:
    """Refuse, before any run, a day outside the partition set (future, today, or before the start)."""
    from dpa_assets.partitions import daily_partitions

    last = daily_partitions.get_last_partition_key()
    for day in days:
        if not daily_partitions.has_partition_key(day.isoformat()):
            raise OperatorError(
                f"{day} is not a freight day: the first day is {daily_partitions.start.date()} and the last "
                f"closed day is {last} (a day is loaded once it is over, Africa/Douala time)"
            )


def _materialize_days(
    days: list[date], verbose: bool = False, step_retry: bool = True, summary_days: list[date] | None = None
) -> int:

    from dpa_assets.definitions import defs

    _require_freight_days(days)
    instance = _instance()
    job = defs.resolve_job_def("daily_freight_job")
    failed_runs: dict[date, str] = {}
    for number, day in enumerate(days, start=1):
        print(f"[{number}/{len(days)}] {day}  loading ...", flush=True)
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            raise_on_error=False,
            run_config=run_config_for(verbose, step_retry),
        )
        print(f"[{number}/{len(days)}] {day}  {_day_outcome(defs, day, result)}", flush=True)
        if not result.success:
            failed_runs[day] = result.run_id
    _print_summary(summary_days or days, failed_runs)
    return 1 if failed_runs else 0


def _day_outcome(defs, day: date, result) -> str:  # noqa: ANN001 - Dagster types imported lazily
    """One line: loaded, or why not (the ledger's reason for a blocked/refused day, else the step's error)."""
    from dpa_assets.alerts.watch import describe_step_failure
    from dpa_assets.warehouse.reports import latest_audit

    if result.success:
        return "loaded"
    try:
        engine = defs.resources["warehouse"].existing_engine()  # a refused run's warehouse is left as it is
        audit_row = latest_audit(engine, day) if engine is not None else None
    except Exception:  # noqa: BLE001 - the warehouse itself may be the problem; the step error says why
        audit_row = None
    if audit_row and audit_row["run_id"] == result.run_id and audit_row["status"] in ("blocked", "refused"):
        return f"{audit_row['status']}: {audit_row['detail']}"
    reasons = [describe_step_failure(event) for event in result.get_step_failure_events()]
    return "failed in " + ("; ".join(reasons) or "the run (see the Dagster UI)")


def _print_summary(days: list[date], failed_runs: dict[date, str] | None = None) -> None:
    from dpa_assets.definitions import defs
    from dpa_assets.warehouse.reports import latest_audit, partition_counts, warehouse_set_up

    warehouse = defs.resources["warehouse"]
    engine = warehouse.existing_engine()  # reads only: a warehouse a refused run found gone stays gone
    readable = engine is not None and warehouse_set_up(engine)
    print(f"{'day':<11} {'status':<10} {'received':>8} {'loaded':>7} {'rejected':>8}")
    for day in days:
        row = latest_audit(engine, day) if readable else None
        counts = partition_counts(engine, day) if readable else {"facts": 0}
        status = row["status"] if row else "not run"
        if day in (failed_runs or {}) and (row is None or row["run_id"] != failed_runs[day]):
            status = "failed"  # failed before the warehouse recorded anything of this run
        received = row["rows_received"] if row and row["rows_received"] is not None else 0
        rejected = row["rows_rejected"] if row and row["rows_rejected"] is not None else 0
        print(f"{day.isoformat():<11} {status:<10} {received:>8} {counts['facts']:>7} {rejected:>8}")
    print(f"warehouse: {warehouse.display_url()}")
    print(f"dagster home: {os.environ['DAGSTER_HOME']}  (UI: make ui)")


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included, in order.

    Args:
        first: the first day of the range.
        last: the last day of the range (not before ``first``).

    Returns:
        The days of the range.
    """
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _requested_days(args: argparse.Namespace) -> list[date]:
    """The days ``dpa materialize`` was asked for: repeated --date, --last N, or --from/--to."""
    if (args.range_from is None) != (args.range_to is None):
        raise OperatorError("--from and --to go together: give the first and the last day of the range")
    if args.range_from is not None:
        if args.date or args.last:
            raise OperatorError("give either --date, --last or --from/--to")
        if args.range_from > args.range_to:
            raise OperatorError(f"--from {args.range_from} is after --to {args.range_to}")
        return days_between(args.range_from, args.range_to)
    if not args.date and not args.last:
        raise OperatorError("say which days: --date DAY (repeatable), --last N or --from DAY --to DAY")
    return args.date or _recent_days(args.last, None)


def backfill_hint(days: list[date]) -> str | None:
    """For a long range: the faster command, so the operator knows it exists."""
    if len(days) <= BACKFILL_HINT_DAYS:
        return None
    return (
        f"{len(days)} days, one run each; `dpa backfill --from {days[0]} --to {days[-1]}` loads them in one run, "
        "about 3x faster"
    )


def cmd_materialize(args: argparse.Namespace) -> int:
    days = _requested_days(args)
    _dagster_home()
    hint = backfill_hint(sorted(set(days)))
    if hint:
        print(hint, flush=True)
    return _materialize_days(sorted(set(days)), args.verbose, step_retry=not args.no_step_retry)


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.range_from > args.range_to:
        raise OperatorError(f"--from {args.range_from} is after --to {args.range_to}")
    days = days_between(args.range_from, args.range_to)
    _dagster_home()
    _require_freight_days([days[0], days[-1]])
    return _backfill_days(days, args.verbose)


def _backfill_days(days: list[date], verbose: bool) -> int:
    """One run of ``freight_backfill_job`` for the range, a line per day as it goes, then the table."""

    from dpa_assets import backfill
    from dpa_assets.definitions import defs

    print(f"loading {len(days)} days in one run ({days[0]} .. {days[-1]}) ...", flush=True)
    done = []

    def print_day(day: str, status: str, detail: str) -> None:
        done.append(day)
        print(f"[{len(done)}/{len(days)}] {day}  {status}{f': {detail}' if detail else ''}", flush=True)

    backfill.progress_listeners.append(print_day)
    try:
        config = run_config_for(verbose, step_retry=True)
        config["ops"] = {BACKFILL_OP: {"config": {"first_day": str(days[0]), "last_day": str(days[-1])}}}
        result = defs.resolve_job_def(BACKFILL_JOB).execute_in_process(
            instance=_instance(),
            raise_on_error=False,
            run_config=config,
            tags={BACKFILL_DAYS_TAG: f"{days[0]}..{days[-1]}"},
        )
    finally:
        backfill.progress_listeners.remove(print_day)
    if not result.success and len(done) < len(days):
        # Stopped before the days (warehouse diverged, unreachable, ...): the run says why.
        print(f"run {result.run_id} failed: {_run_failure(result)}", flush=True)
    failed = {date.fromisoformat(day): result.run_id for day in _days_not_loaded(result, days)}
    _print_summary(days, failed)
    return 0 if result.success else 1


def _run_failure(result) -> str:  # noqa: ANN001 - Dagster types imported lazily
    from dpa_assets.alerts.watch import describe_step_failure

    return "; ".join(describe_step_failure(event) for event in result.get_step_failure_events()) or "see the UI"


def _days_not_loaded(result, days: list[date]) -> list[str]:  # noqa: ANN001
    loaded = {
        event.event_specific_data.materialization.partition
        for event in result.all_events
        if event.is_step_materialization and event.asset_key is not None and event.asset_key.path == ["warehouse_facts"]
    }
    return [str(day) for day in days if str(day) not in loaded]


def cmd_demo(args: argparse.Namespace) -> int:
    _dagster_home()
    cmd_seed_landing(argparse.Namespace(days=args.days, end=None, seed=0, landing_dir=None))
    return _materialize_days(_recent_days(args.days, None), args.verbose)


def cmd_setup_warehouse(_args: argparse.Namespace) -> int:
    _dagster_home()
    from dpa_assets.definitions import defs
    from dpa_assets.warehouse.engine import create_warehouse_engine
    from dpa_assets.warehouse.protection import (
        MISSING,
        ProtectedTableMissing,
        ProtectionIncomplete,
        ensure_schema,
        protection_status,
    )

    warehouse = defs.resources["warehouse"]
    engine = create_warehouse_engine(warehouse.resolved_url(), warehouse.lock_timeout_seconds)
    try:
        ensure_schema(engine)  # installs whatever this role may install, every run
    except ProtectedTableMissing as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    except ProtectionIncomplete as error:
        print(f"incomplete: {error}", file=sys.stderr)
    pieces = protection_status(engine)
    engine.dispose()
    print(f"{'protection':<26} {'state':<13} detail")
    for piece in pieces:
        print(f"{piece.name:<26} {piece.state:<13} {piece.detail}")
    missing = [piece.name for piece in pieces if piece.state == MISSING]
    if missing:
        print(f"warehouse ready, protection INCOMPLETE ({', '.join(missing)}): {warehouse.display_url()}")
        return 1
    print(f"warehouse ready, protection in place as listed: {warehouse.display_url()}")
    return 0


def cmd_break_glass(args: argparse.Namespace) -> int:
    if args.confirm != args.date:
        print(f"refused: repeat the day with --confirm {args.date.isoformat()} to empty it", file=sys.stderr)
        return 2
    _dagster_home()
    import sqlalchemy as sa

    from dpa_assets.definitions import defs
    from dpa_assets.warehouse.ledger import break_glass_remove_partition

    warehouse = defs.resources["warehouse"]
    try:
        removed = break_glass_remove_partition(warehouse.get_engine(), args.date, args.actor, args.reason)
    except ValueError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    except sa.exc.DBAPIError as error:  # e.g. the pipeline role may not call dpa_break_glass
        print(f"refused: {str(error.orig).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(
        f"{args.date}: removed {removed['facts']} facts and {removed['rejects']} rejects; "
        f"recorded in load_audit as break_glass by {args.actor}"
    )
    return 0


def cmd_new_warehouse(args: argparse.Namespace) -> int:
    """Start an empty warehouse on purpose, recorded in Dagster so earlier loads are not expected in it."""
    _dagster_home()

    from dpa_assets.definitions import defs
    from dpa_assets.warehouse.engine import create_warehouse_engine
    from dpa_assets.warehouse.protection import ensure_schema
    from dpa_assets.warehouse.reports import fact_row_count
    from dpa_assets.warehouse_record import record_new_warehouse

    warehouse = defs.resources["warehouse"]
    if args.confirm != "new-warehouse":
        print("refused: add --confirm new-warehouse to start an empty warehouse", file=sys.stderr)
        return 2
    if not args.actor.strip() or len(args.reason.strip()) < 10:
        print("refused: give your name (--actor) and a reason of at least 10 characters", file=sys.stderr)
        return 2
    engine = create_warehouse_engine(warehouse.resolved_url())
    try:
        held = fact_row_count(engine)
        if held:
            print(
                f"refused: {warehouse.display_url()} still holds {held} fact rows; a new warehouse starts empty "
                "(point DPA_WAREHOUSE_URL at a new database, or move the old file away)",
                file=sys.stderr,
            )
            return 2
        ensure_schema(engine)
    finally:
        engine.dispose()
    record_new_warehouse(_instance(), warehouse.display_url(), args.actor.strip(), args.reason.strip())
    print(f"new warehouse started: {warehouse.display_url()} (recorded in Dagster by {args.actor.strip()})")
    return 0


def cmd_serve_api(args: argparse.Namespace) -> int:
    from dpa_assets.settings import ENV_FREIGHT_API_TOKEN
    from dpa_assets.sources.demo_api import FreightApiServer, parse_fault

    token = os.environ.get(ENV_FREIGHT_API_TOKEN)
    if not token:
        print(f"set {ENV_FREIGHT_API_TOKEN}: clients must present it as a bearer token", file=sys.stderr)
        return 2
    try:
        faults = [parse_fault(spec) for spec in args.fault or []]
    except ValueError as error:  # an unknown kind, day or count: the message says which
        raise OperatorError(str(error)) from None
    try:
        server = FreightApiServer(token=token, host=args.host, port=args.port, seed=args.seed)
    except OSError as error:  # the port is taken, or not ours to take
        raise OperatorError(f"cannot listen on {args.host} port {args.port}: {error.strerror or error}") from None
    for fault in faults:
        server.add_fault(**vars(fault))
    print(f"freight API on {server.url}/v1/movements (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    _dagster_home()
    from dpa_assets.alerts.report import print_alerts
    from dpa_assets.definitions import defs

    return print_alerts(defs.resources["alert_journal"], args.last)


def _recovery_parts(read_only: bool) -> tuple:
    """The instance, the definitions, the warehouse resource and an engine (one that installs nothing if read-only)."""

    from dpa_assets.definitions import defs
    from dpa_assets.warehouse.engine import create_warehouse_engine

    warehouse = defs.resources["warehouse"]
    if read_only:
        engine = create_warehouse_engine(warehouse.resolved_url(), warehouse.lock_timeout_seconds)
    else:
        engine = warehouse.get_engine()  # sets up a warehouse a killed first run never reached
    return _instance(), defs, warehouse, engine


def cmd_doctor(args: argparse.Namespace) -> int:
    """Read-only: print one line per finding; exit 1 when something needs attention."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    if not (home / "dagster.yaml").exists():
        print(f"PROBLEM no Dagster home at {home} (run dpa setup-warehouse or make ui first)")
        return 1
    os.environ["DAGSTER_HOME"] = str(home)
    from dpa_assets.configuration import configuration_problems

    if configuration_problems():  # the same one line as every other command, not a traceback
        raise OperatorError("; ".join(configuration_problems()))
    from dpa_assets.recovery import doctor

    instance, defs, warehouse, engine = _recovery_parts(read_only=True)
    policy = defs.resources["recovery_policy"]
    checks = [
        doctor.daemon_findings(instance, doctor.now_utc()),
        doctor.instigator_findings(instance, defs),
        doctor.zombie_findings(instance, policy),
    ]
    source = defs.resources["freight_source"]
    checks.extend(_warehouse_findings(doctor, instance, engine, warehouse, args.days, source.delivered))
    from dpa_assets.alerts.report import sms_configured

    checks.append(doctor.alert_findings(defs.resources["alert_journal"].path(), sms_configured()))
    engine.dispose()
    problems = [line for found, _ in checks for line in found]
    for found, notes in checks:
        for line in found:
            print(f"PROBLEM {line}")
        for line in notes:
            print(f"ok      {line}")
    print(f"{len(problems)} problem(s)" if problems else "healthy")
    return 1 if problems else 0


def _warehouse_findings(doctor, instance, engine, warehouse, days: int, delivered) -> list:  # noqa: ANN001 - lazy imports
    """The days and the protection, or why the warehouse could not be read: a finding, not a traceback.

    ``delivered``: the freight source's "is this day there to fetch?" (a day waiting for its file says so).
    """
    import sqlalchemy as sa

    from dpa_assets.warehouse.reports import warehouse_set_up

    try:
        if not warehouse_set_up(engine):
            return [([f"warehouse {warehouse.display_url()} is not set up (dpa setup-warehouse)"], [])]
        recent = _recent_days(days, None)
        day_findings = doctor.day_findings(instance, engine, warehouse.display_url(), recent, delivered)
        return [day_findings, doctor.protection_findings(engine)]
    except sa.exc.DBAPIError as error:
        return [([_warehouse_fault(error) or str(error)], [])]


def cmd_recover(args: argparse.Namespace) -> int:
    """The cold-restart runbook: fail zombie runs, then re-load the recent days the ledger lacks."""
    _dagster_home()
    from dpa_assets.recovery.catchup import HELD, MISSING, RELOAD, DayState, read_day_states, runs_by_day
    from dpa_assets.recovery.zombies import detect_zombies, fail_zombies
    from dpa_assets.warehouse.reports import warehouse_set_up

    instance, defs, _warehouse, engine = _recovery_parts(read_only=args.dry_run)
    zombies = detect_zombies(instance, defs.resources["recovery_policy"])
    for zombie in zombies:
        verb = "would fail" if args.dry_run else "failing"
        print(f"{verb} zombie run {zombie.run_id} ({zombie.partition or 'no day'}): {zombie.reason}")
    if not args.dry_run:
        fail_zombies(instance, zombies, defs.resources["alert_journal"].path())
    days = _recent_days(args.days, None)
    if warehouse_set_up(engine):
        states = read_day_states(engine, days)
    else:  # only a dry run gets here: a real one sets the warehouse up first
        states = [DayState(day, MISSING, "warehouse not set up") for day in days]
    in_flight, _ = runs_by_day(instance, days)
    source = defs.resources["freight_source"]
    to_load = []
    for state in states:
        if state.day in in_flight:
            print(f"{state.day}  {state.state:<11} skipped: a run for this day is queued or running")
        elif state.state in RELOAD and source.delivered(state.day.isoformat()) is False:
            print(f"{state.day}  {state.state:<11} {NOT_DELIVERED_HINT}")
        elif state.state in RELOAD:
            to_load.append(state.day)
            print(f"{state.day}  {state.state:<11} {'would re-load' if args.dry_run else 're-load'}")
        elif state.state in HELD:
            print(f"{state.day}  {state.state:<11} not retried: {state.detail[:160]}")
        else:
            print(f"{state.day}  {state.state:<11} nothing to do")
    if args.dry_run or not to_load:
        print("dry run: nothing changed" if args.dry_run else "no day to re-load")
        return 0
    return _materialize_days(to_load, args.verbose, step_retry=False, summary_days=days)


def cmd_list_partitions(args: argparse.Namespace) -> int:
    from dpa_assets.partitions import daily_partitions

    keys = daily_partitions.get_partition_keys()
    print("\n".join(keys[-args.last :]))
    return 0


def cmd_check_defs(_args: argparse.Namespace) -> int:
    import dagster as dg

    from dpa_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = sorted(key.to_user_string() for key in defs.resolve_all_asset_keys())
    print(f"definitions load: assets {', '.join(keys)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="dpa", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step-by-step log")
    commands = parser.add_subparsers(dest="command", required=True)

    seed = commands.add_parser("seed-landing", help="write synthetic landing files for recent days")
    seed.add_argument("--days", type=_count, default=3)
    seed.add_argument("--end", type=_day, help="last day (default: yesterday, Africa/Douala)")
    seed.add_argument("--seed", type=int, default=0)
    seed.add_argument("--landing-dir", help=f"default ${ENV_LANDING_DIR} or <DAGSTER_HOME>/landing")
    seed.set_defaults(handler=cmd_seed_landing)

    materialize = commands.add_parser("materialize", help="load days through the Dagster job")
    which = materialize.add_mutually_exclusive_group()
    which.add_argument("--date", type=_day, action="append", help="a day (repeatable)")
    which.add_argument("--last", type=_count, help="the last N closed days")
    # A range (a backfill) is one run per day: a bad day fails alone, with its own checks and alert.
    materialize.add_argument("--from", dest="range_from", type=_day, help="first day of a range")
    materialize.add_argument("--to", dest="range_to", type=_day, help="last day of a range")
    materialize.add_argument(
        "--no-step-retry",
        action="store_true",
        help="fail at once when the source stays unreachable (skip raw_freight's RetryPolicy waits)",
    )
    materialize.set_defaults(handler=cmd_materialize)

    backfill = commands.add_parser(
        "backfill", help="load a range of days in ONE run (fast), each day committed and audited on its own"
    )
    backfill.add_argument("--from", dest="range_from", type=_day, required=True, help="first day")
    backfill.add_argument("--to", dest="range_to", type=_day, required=True, help="last day (included)")
    backfill.set_defaults(handler=cmd_backfill)

    demo = commands.add_parser("demo", help="seed landing files and load them (what `make run` does)")
    demo.add_argument("--days", type=_count, default=3)
    demo.set_defaults(handler=cmd_demo)

    setup = commands.add_parser("setup-warehouse", help="create warehouse tables and their protection")
    setup.set_defaults(handler=cmd_setup_warehouse)

    glass = commands.add_parser(
        "break-glass", help="administrator: empty one day's facts and rejects, audited with who and why"
    )
    glass.add_argument("--date", type=_day, required=True)
    glass.add_argument("--confirm", type=_day, required=True, help="the same day again")
    glass.add_argument("--actor", required=True, help="your name, recorded in the audit trail")
    glass.add_argument("--reason", required=True, help="why, recorded in the audit trail")
    glass.set_defaults(handler=cmd_break_glass)

    fresh = commands.add_parser(
        "new-warehouse", help="administrator: start an empty warehouse on purpose (recorded in Dagster)"
    )
    fresh.add_argument("--confirm", required=True, help="the words new-warehouse")
    fresh.add_argument("--actor", required=True, help="your name, recorded in Dagster")
    fresh.add_argument("--reason", required=True, help="why, recorded in Dagster")
    fresh.set_defaults(handler=cmd_new_warehouse)

    serve = commands.add_parser("serve-api", help="run the demo freight API (docs/freight-api.md) on loopback")
    serve.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost", "::1"])
    serve.add_argument("--port", type=_port, default=8765)
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--fault", action="append", help="KIND[:DAY[:TIMES]], repeatable (see docs/freight-api.md)")
    serve.set_defaults(handler=cmd_serve_api)

    alerts = commands.add_parser("alerts", help="print the latest failure alerts from the journal")
    alerts.add_argument("--last", type=_count, default=20)
    alerts.set_defaults(handler=cmd_alerts)

    doctor = commands.add_parser("doctor", help="read-only health report; exit 1 when something needs attention")
    doctor.add_argument("--days", type=_count, default=7, help="recent days to compare (default 7)")
    doctor.set_defaults(handler=cmd_doctor)

    recover = commands.add_parser(
        "recover", help="fail zombie runs, then re-load recent days missing, failed or refused in the ledger"
    )
    recover.add_argument("--days", type=_count, default=3, help="recent days to consider (default 3)")
    recover.add_argument("--dry-run", action="store_true", help="print the plan only")
    recover.set_defaults(handler=cmd_recover)

    partitions = commands.add_parser("list-partitions", help="print the most recent partition keys")
    partitions.add_argument("--last", type=_count, default=7)
    partitions.set_defaults(handler=cmd_list_partitions)

    check = commands.add_parser("check-defs", help="load and validate the code location")
    check.set_defaults(handler=cmd_check_defs)
    return parser


def _flushed(code: int) -> int:
    sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _flushed(args.handler(args))
    except BrokenPipeError:
        # The reader went away (`dpa doctor | head`): nothing more to say to it, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OperatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # Imported here: importing the warehouse modules builds the partition set, which needs the
        # settings checked by the handler first.
        from dpa_assets.warehouse.protection import ProtectedTableMissing, ProtectionIncomplete
        from dpa_assets.warehouse_record import WarehouseDiverged

        if isinstance(error, (ProtectedTableMissing, ProtectionIncomplete, WarehouseDiverged)):
            # The operator's next step is in the message; a traceback would only hide it.
            print(f"error: {error}", file=sys.stderr)
            return 1
        fault = _warehouse_fault(error)
        if fault is None or args.verbose:
            raise
        print(f"error: {fault}", file=sys.stderr)
        return 1


def _warehouse_fault(error: Exception) -> str | None:
    """One line for a database the warehouse cannot be reached in or used by (down, refused, no rights).

    None for anything else, which is a defect of DPA and keeps its traceback.
    """
    import sqlalchemy as sa

    if not isinstance(error, sa.exc.DBAPIError):
        return None
    # The driver's own first line (psycopg2 and sqlite3 name host/port or file, never the password).
    reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__
    return f"the warehouse {_warehouse_display_url()} cannot be used: {reason} (`dpa -v ...` shows the trace)"


def _warehouse_display_url() -> str:
    from dpa_assets.definitions import defs

    return defs.resources["warehouse"].display_url()


if __name__ == "__main__":
    sys.exit(main())
