"""Constants shared by the whole code location: time zone, table names, env-var names.

Values that change per deployment are read from the environment elsewhere; only names live here.
"""

TIMEZONE = "Africa/Douala"  # the operator's business day: UTC+1, no daylight saving
DEFAULT_PARTITION_START = "2026-01-01"
DEFAULT_MAX_REJECTION_RATE = 0.30

# Warehouse tables. The fact table is named after its asset (IO manager convention).
FACT_TABLE = "warehouse_facts"
# The range backfill (backfill.py): its job, its op (whose config holds the range) and the run tag first..last.
BACKFILL_JOB, BACKFILL_OP, BACKFILL_DAYS_TAG = "freight_backfill_job", "load_days_in_order", "dpa/days"
REJECT_TABLE = "freight_rejects"
AUDIT_TABLE = "load_audit"
PROTECTED_TABLES = (FACT_TABLE, REJECT_TABLE, AUDIT_TABLE)

# Environment variables (the README documents each one).
ENV_DEPLOYMENT = "DPA_DEPLOYMENT"
ENV_PARTITION_START = "DPA_PARTITION_START"
ENV_WAREHOUSE_URL = "DPA_WAREHOUSE_URL"
ENV_LANDING_DIR = "DPA_LANDING_DIR"
ENV_ARCHIVE_DIR = "DPA_ARCHIVE_DIR"
ENV_ALERT_JOURNAL = "DPA_ALERT_JOURNAL"
ENV_UI_BASE_URL = "DPA_UI_BASE_URL"
ENV_SMS_BASE_URL = "DPA_SMS_BASE_URL"
ENV_SMS_USERNAME = "DPA_SMS_USERNAME"
ENV_SMS_API_KEY = "DPA_SMS_API_KEY"
ENV_SMS_RECIPIENTS = "DPA_SMS_RECIPIENTS"
ENV_SMS_SENDER = "DPA_SMS_SENDER"
ENV_FREIGHT_SOURCE = "DPA_FREIGHT_SOURCE"
ENV_FREIGHT_API_URL = "DPA_FREIGHT_API_URL"
ENV_FREIGHT_API_TOKEN = "DPA_FREIGHT_API_TOKEN"

DEFAULT_UI_BASE_URL = "http://127.0.0.1:3000"
DEFAULT_SMS_BASE_URL = (
    "https://api.africastalking.com"  # Africa's Talking; sandbox: https://api.sandbox.africastalking.com
)

DEPLOYMENTS = ("local", "production")
FREIGHT_SOURCES = ("landing", "api")
