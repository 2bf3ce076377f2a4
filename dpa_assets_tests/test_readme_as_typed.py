"""README commands typed exactly as written, against real parts: what the operator sees must be the truth."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import sqlalchemy as sa

from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.protection import ensure_schema

LEAST_PRIVILEGE_SQL = Path(__file__).resolve().parents[1] / "dpa_assets" / "warehouse" / "sql" / "least_privilege.sql"


def _libpq_url(url: str) -> str:
    """The URL as psql takes it (no SQLAlchemy driver suffix)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_least_privilege_sql_as_typed_fails_loudly_when_the_owner_cannot_create_the_role(pg_url):
    """`psql "$OWNER_URL" -v pipeline_password=… -f least_privilege.sql`, by an owner without CREATEROLE.

    psql goes on after an error and exits 0 unless told otherwise: the operator would believe the
    pipeline role was set up when nothing was granted.
    """
    ensure_schema(create_warehouse_engine(pg_url))
    owner = f"no_createrole_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {owner} LOGIN NOCREATEROLE")  # noqa: S608 - our own name
    admin.dispose()
    owner_url = _libpq_url(sa.make_url(pg_url).set(username=owner).render_as_string(hide_password=False))

    result = subprocess.run(
        ["psql", owner_url, "-v", "pipeline_password=s3cret-for-test", "-f", str(LEAST_PRIVILEGE_SQL)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0, result.stdout + result.stderr
    assert "ERROR" in result.stderr
