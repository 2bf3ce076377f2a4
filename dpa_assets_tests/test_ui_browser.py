"""The on-call engineer's and the auditor's flows in the Dagster UI, clicked in a real headless Chromium.

The daemon and the webserver run as ``make ui`` runs them, on a Dagster home and a SQLite warehouse
prepared by the real pipeline (``dpa materialize``): some days loaded, one blocked by the 30% rule, one
missing with its landing file waiting. Screenshots go to the test's folder; with ``DPA_SCREENSHOT_DIR``
set (e.g. ``docs/screenshots``) the README's pictures are refreshed too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dpa_assets.instance import install_instance_yaml
from dpa_assets.partitions import LOCAL_TZ
from dpa_assets.sources.generator import GeneratedDay, generate_day, write_landing_file
from dpa_assets_tests.support import browser as browser_support
from dpa_assets_tests.support import services
from dpa_assets_tests.support.browser import CHROMIUM_ARGS, Screenshots, require_browser

REPO = Path(__file__).resolve().parents[1]
ROWS_PER_DAY = 80
# The machine is slow and shared: every wait on the UI is generous, and explicit.
UI_TIMEOUT_MS = 120_000
RUN_TIMEOUT_S = 420
DOCS_SCREENSHOTS = {"oncall-1-partitions", "oncall-2-launch", "auditor-1-blocked-day", "auditor-2-top-reasons"}


class Site:
    """The running UI and what the warehouse was prepared with."""

    def __init__(self, root: Path, days: dict[str, date], generated: dict[date, GeneratedDay]) -> None:
        self.root = root
        self.days = days
        self.generated = generated
        self.port = 0
        self.warehouse_url = f"sqlite:///{root / 'warehouse.sqlite'}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DPA_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(self.root / "home"),
            DPA_WAREHOUSE_URL=self.warehouse_url,
            DPA_LANDING_DIR=str(self.root / "landing"),
            DPA_ARCHIVE_DIR=str(self.root / "archive"),
            # A short partition set, so that "missing" means the one day nobody loaded.
            DPA_PARTITION_START=self.days["first"].isoformat(),
        )
        return env


def _last_closed_day() -> date:
    return datetime.now(LOCAL_TZ).date() - timedelta(days=1)


def _prepare(root: Path) -> Site:
    """Landing files for five days; load all but the missing one: three load, one is blocked."""
    last = _last_closed_day()
    days = {"first": last - timedelta(days=4), "blocked": last - timedelta(days=2), "missing": last - timedelta(days=1)}
    generated = {}
    for offset in range(5):
        day = days["first"] + timedelta(days=offset)
        bad_fraction = 0.5 if day == days["blocked"] else 0.04
        generated[day] = generate_day(day, rows=ROWS_PER_DAY, seed=11, bad_fraction=bad_fraction)
        write_landing_file(root / "landing", generated[day])
    site = Site(root, days, generated)
    install_instance_yaml(root / "home")
    loads = [day for day in generated if day != days["missing"]]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dpa")), "materialize", *(f"--date={day}" for day in loads)],
        cwd=REPO,
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the blocked day fails the command
    assert f"{days['blocked']}  blocked: " in result.stdout, result.stdout
    assert len(re.findall(r"^\[\d/\d\] \S+  loaded$", result.stdout, re.MULTILINE)) == 3, result.stdout
    # freight_catch_up_sensor (on by default) would re-load the missing day by itself once the daemon
    # runs, taking the on-call's click away: stop it, as the README says an operator can.
    stopped = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "sensor",
            "stop",
            "freight_catch_up_sensor",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    require_browser()
    root = tmp_path_factory.mktemp("ui")
    site = _prepare(root)
    site.port = services.free_port()
    daemon_log, webserver_log = root / "daemon.log", root / "webserver.log"
    started = []
    try:
        started.append(
            services.start_service(["dagster-daemon", "run", "-w", "workspace.yaml"], REPO, site.env(), daemon_log)
        )
        webserver = services.start_service(
            ["dagster-webserver", "-h", "127.0.0.1", "-p", str(site.port), "-w", "workspace.yaml"],
            REPO,
            site.env(),
            webserver_log,
        )
        started.append(webserver)
        services.wait_for_webserver(site.port, webserver, webserver_log, timeout=300)
        yield site
    finally:
        for process in reversed(started):
            services.stop_service(process)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(require_browser()), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, site: Site):
    context = browser.new_context(viewport={"width": 1400, "height": 860}, base_url=site.url)
    # Dagster greets a new browser with a newsletter dialog over the page; this is its "Skip".
    context.add_init_script("window.localStorage.setItem('communityNux', '1')")
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Screenshots:
    return Screenshots(tmp_path, DOCS_SCREENSHOTS)


def _visible_text(page, text: str):  # noqa: ANN001, ANN202 - playwright types, imported lazily
    """The first visible element whose whole text is ``text`` (lists render hidden copies too)."""
    locator = page.get_by_text(text, exact=True).filter(visible=True).first
    locator.wait_for()
    return locator


def _metadata_cell(page, key: str):  # noqa: ANN001, ANN202 - playwright types, imported lazily
    """The value cell of the metadata table row named ``key``."""
    return page.locator("tr").filter(has=page.locator("td", has_text=re.compile(f"^{key}$"))).first.locator("td").nth(1)


def _warehouse_rows(site: Site, day: date) -> tuple[int, int]:
    engine = sa.create_engine(site.warehouse_url)
    with engine.connect() as connection:
        facts, rejects = (
            connection.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE partition_date = :day"), {"day": day.isoformat()}
            ).scalar()
            for table in ("warehouse_facts", "freight_rejects")
        )
    engine.dispose()
    return facts, rejects


def _audit_and_top_rules(site: Site, day: date, status: str) -> tuple[dict, set[str]]:
    """A day's audit row of ``status`` and its most frequent rejection rules, read from the warehouse."""
    engine = sa.create_engine(site.warehouse_url)
    with engine.connect() as connection:
        audit = (
            connection.execute(
                sa.text("SELECT * FROM load_audit WHERE partition_date = :day AND status = :status"),
                {"day": day.isoformat(), "status": status},
            )
            .mappings()
            .one()
        )
        reasons = connection.execute(
            sa.text("SELECT reasons FROM freight_rejects WHERE partition_date = :day"), {"day": day.isoformat()}
        ).scalars()
        counts = Counter(reason["rule"] for text in reasons for reason in json.loads(text))
    engine.dispose()
    top = max(counts.values())
    return dict(audit), {rule for rule, count in counts.items() if count == top}


def _see_the_assets_and_their_lineage(page, site: Site) -> None:  # noqa: ANN001 - playwright's Page
    from playwright.sync_api import expect

    page.goto("/asset-groups")
    for asset in ("raw_freight", "validated_freight", "warehouse_facts"):
        _visible_text(page, asset)
    # Each node has loaded its partition counts once all three say so.
    nodes_loaded = page.get_by_text(f"{len(site.generated)} partitions", exact=True)
    expect(nodes_loaded).to_have_count(3, timeout=UI_TIMEOUT_MS)
    assert page.locator("svg path[marker-end]").count() >= 2  # the graph draws the edges
    page.goto("/assets/validated_freight")
    body = page.locator("body")  # its text content: no spaces between a heading and its list
    expect(body).to_contain_text(re.compile(r"Upstream assets\s*raw_freight"), timeout=UI_TIMEOUT_MS)
    expect(body).to_contain_text(re.compile(r"Downstream assets\s*warehouse_facts"), timeout=UI_TIMEOUT_MS)


def _launch_one_day_from_the_graph(page, day: str, screenshots: Screenshots) -> str:  # noqa: ANN001 - Page
    """Lineage -> Materialize all… -> Custom partition -> Launch 1 run; returns the run's id."""
    page.goto("/asset-groups")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    _visible_text(dialog, "Launch runs to materialize 3 assets")
    partition_input = dialog.get_by_role("textbox").first
    partition_input.fill(day)
    partition_input.press("Enter")
    _visible_text(dialog, "1 partition")
    screenshots.take(page, "oncall-2-launch")
    dialog.get_by_role("button", name="Launch 1 run").click()

    toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$")).first
    toast.wait_for()
    short_id = toast.inner_text().split()[-1]
    page.goto("/runs")
    page.get_by_role("link", name=short_id).first.click()
    page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]+"))
    return page.url.rsplit("/", 1)[-1].split("?")[0]


@pytest.mark.slow
def test_on_call_loads_the_missing_day_from_the_ui(site: Site, page, screenshots: Screenshots):
    missing = site.days["missing"].isoformat()
    assert _warehouse_rows(site, site.days["missing"]) == (0, 0)

    _see_the_assets_and_their_lineage(page, site)
    screenshots.take(page, "oncall-0-lineage")

    # warehouse_facts -> Partitions: the missing day stands out.
    page.goto("/assets/warehouse_facts?view=partitions")
    _visible_text(page, "Missing (1)")
    _visible_text(page, "Failed (1)")
    _visible_text(page, "Materialized (3)")
    _visible_text(page, missing).click()
    page.wait_for_url(re.compile(f"partition={missing}"))
    _visible_text(page, "View all historical events (0)")  # never materialized
    screenshots.take(page, "oncall-1-partitions")

    # The day's whole chain: warehouse_facts alone would find no validated freight for it.
    run_id = _launch_one_day_from_the_graph(page, missing, screenshots)
    status = services.wait_for_run(site.port, run_id, timeout=RUN_TIMEOUT_S)
    assert status == "SUCCESS", (site.root / "daemon.log").read_text(errors="replace")[-4000:]
    _visible_text(page, "Success")
    _visible_text(page, f"partition: {missing}")
    screenshots.take(page, "oncall-3-run-success")

    facts, rejects = _warehouse_rows(site, site.days["missing"])
    assert facts > 0
    assert facts + rejects == len(site.generated[site.days["missing"]].records)
    page.goto("/assets/warehouse_facts?view=partitions")
    _visible_text(page, "Missing (0)")
    _visible_text(page, "Materialized (4)")


def _open_check_partition(page, day: date, audit: dict, verdict: str) -> None:  # noqa: ANN001 - Page
    """Click a day in the check's partition list; wait until its run, counts and verdict are shown."""
    from playwright.sync_api import expect

    _visible_text(page, day.isoformat()).click()
    page.get_by_role("link", name=audit["run_id"][:8]).filter(visible=True).first.wait_for()
    # Dagster's status tag (the check list on the left says "Failed" whatever the day: see issue 11 §2).
    page.locator(".BaseTag", has_text=re.compile(f"^{verdict}$")).filter(visible=True).first.wait_for()
    expect(_metadata_cell(page, "rows_received")).to_have_text(str(audit["rows_received"]), timeout=UI_TIMEOUT_MS)
    expect(_metadata_cell(page, "rows_rejected")).to_have_text(str(audit["rows_rejected"]), timeout=UI_TIMEOUT_MS)


@pytest.mark.slow
def test_auditor_reads_the_blocked_day_in_the_rejection_rate_check(site: Site, page, screenshots: Screenshots):
    # Not the first day: its date is also the label under the partition bar.
    loaded, blocked = site.days["first"] + timedelta(days=1), site.days["blocked"]
    loaded_audit, _ = _audit_and_top_rules(site, loaded, "loaded")
    blocked_audit, top_rules = _audit_and_top_rules(site, blocked, "blocked")

    page.goto("/assets/validated_freight?view=checks")
    _visible_text(page, "rejection_rate")
    page.locator("button[role=tab]", has_text="Partitions").click()
    _visible_text(page, "Failed (1)")  # per-day results: one day broke the rule

    _open_check_partition(page, loaded, loaded_audit, "Passed")
    assert float(_metadata_cell(page, "rejection_rate_percent").inner_text()) <= 30.0

    _open_check_partition(page, blocked, blocked_audit, "Failed")
    assert blocked_audit["rows_received"] == ROWS_PER_DAY
    percent = float(_metadata_cell(page, "rejection_rate_percent").inner_text())
    expected = 100 * blocked_audit["rows_rejected"] / blocked_audit["rows_received"]
    assert percent == pytest.approx(expected, abs=0.01)
    assert percent > float(_metadata_cell(page, "max_rejection_rate_percent").inner_text()) == pytest.approx(30.0)
    screenshots.take(page, "auditor-1-blocked-day")
    # The top reasons are a table in the panel itself: readable without opening anything.
    reasons = _metadata_cell(page, "top_reasons")
    reasons.scroll_into_view_if_needed()
    for rule in top_rules:
        _visible_text(reasons, rule)
    screenshots.take(page, "auditor-2-top-reasons")


def test_a_missing_browser_fails_in_ci_and_skips_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(browser_support, "CHROMIUM", tmp_path / "no-chromium")

    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="no-chromium is missing"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_browser()
