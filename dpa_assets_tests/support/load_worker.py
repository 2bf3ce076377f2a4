"""A separate process that commits one prepared partition load, so tests can kill -9 it mid-way.

    python -m dpa_assets_tests.support.load_worker URL LOAD_PICKLE [--pause-before-commit]

Prints ``STARTED`` once the commit begins and ``BEFORE_COMMIT`` right before the commit, then
(with --pause-before-commit) sleeps there so the test can kill it at exactly that point.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time

from dpa_assets.warehouse.engine import create_warehouse_engine
from dpa_assets.warehouse.ledger import commit_partition
from dpa_assets.warehouse.protection import ensure_schema
from dpa_assets_tests.support.loads import record_passed_validation


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("load_pickle")
    parser.add_argument("--pause-before-commit", action="store_true")
    args = parser.parse_args()
    with open(args.load_pickle, "rb") as handle:
        load = pickle.load(handle)
    engine = create_warehouse_engine(args.url)
    ensure_schema(engine)

    def before_commit(_connection) -> None:
        print("BEFORE_COMMIT", flush=True)
        if args.pause_before_commit:
            time.sleep(120)

    record_passed_validation(engine, load)
    print("STARTED", flush=True)
    commit_partition(engine, load, before_commit=before_commit)
    print("COMMITTED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
