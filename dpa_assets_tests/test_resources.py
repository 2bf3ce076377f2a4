"""Resources read outside a run (by ``dpa``) see the same settings a run sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpa_assets.deployments import build_resources


def test_production_resources_read_their_environment_outside_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DPA_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'prod.sqlite'}")
    monkeypatch.setenv("DPA_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("DPA_ARCHIVE_DIR", str(tmp_path / "archive"))

    resources = build_resources("production")

    assert resources["warehouse"].resolved_url() == f"sqlite:///{tmp_path / 'prod.sqlite'}"
    assert resources["freight_source"].resolved_dir() == Path(tmp_path / "landing")
    assert resources["payload_archive"].root() == Path(tmp_path / "archive")


def test_production_resource_with_its_variable_unset_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DPA_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    with pytest.raises(ValueError, match="DPA_WAREHOUSE_URL is not set"):
        build_resources("production")["warehouse"].resolved_url()
    assert not list(tmp_path.iterdir())  # no local SQLite warehouse made up in its place
