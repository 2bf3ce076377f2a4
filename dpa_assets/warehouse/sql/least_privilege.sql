-- Least-privilege role for the nightly pipeline on PostgreSQL.
--
-- Run as the warehouse owner (it needs CREATEROLE to create the role the first time) or a superuser,
-- with psql, AFTER `dpa setup-warehouse` has created the tables, their protection and the dpa_*
-- functions as that owner:
--
--   psql "$OWNER_URL" -v pipeline_password="$DPA_PIPELINE_PASSWORD" -f least_privilege.sql
--
-- The pipeline role then owns nothing and holds no privilege that removes or changes a committed
-- row by itself: no DELETE, UPDATE, TRUNCATE or TRIGGER, and it cannot DROP, ALTER or disable
-- triggers. It may INSERT and SELECT, and EXECUTE the two SECURITY DEFINER replace functions,
-- which remove a day only if the same transaction writes that day's audit row, and dpa_facts_digest
-- (reads a day's digest). It may not call dpa_break_glass. `dpa setup-warehouse` reports these privileges ("dpa_pipeline privileges").
-- Point DPA_WAREHOUSE_URL at this role: postgresql+psycopg2://dpa_pipeline:<password>@host/db

-- psql would go on after an error and exit 0: stop at the first one, so a failure is never taken for success.
\set ON_ERROR_STOP on

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dpa_pipeline') THEN
    CREATE ROLE dpa_pipeline LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
END $$;
ALTER ROLE dpa_pipeline PASSWORD :'pipeline_password';

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO dpa_pipeline;
-- Earlier versions granted DELETE: take back anything that can remove or change a row.
REVOKE DELETE, UPDATE, TRUNCATE, TRIGGER, REFERENCES ON warehouse_facts, freight_rejects, load_audit FROM dpa_pipeline;
GRANT SELECT, INSERT ON warehouse_facts, freight_rejects, load_audit TO dpa_pipeline;
GRANT USAGE ON SEQUENCE load_audit_id_seq TO dpa_pipeline;
GRANT SELECT ON dpa_schema_marker TO dpa_pipeline;
GRANT EXECUTE ON FUNCTION dpa_replace_partition(date), dpa_replace_rejects(date, text), dpa_facts_digest(date)
  TO dpa_pipeline;
REVOKE ALL ON FUNCTION dpa_break_glass(date, text, text) FROM PUBLIC, dpa_pipeline;
