-- Least-privilege role for the nightly pipeline on PostgreSQL.
--
-- Run as the warehouse owner (or a superuser) with psql, AFTER `dpa setup-warehouse` has created
-- the tables and their protection as that owner:
--
--   psql "$OWNER_URL" -v pipeline_password="$DPA_PIPELINE_PASSWORD" -f least_privilege.sql
--
-- The pipeline role then owns nothing: it cannot DROP, ALTER, TRUNCATE or disable triggers on
-- the protected tables. It may INSERT, and DELETE only what the triggers let the partition
-- commit delete (one partition, inside the commit transaction). The audit trail is append-only.
-- Point DPA_WAREHOUSE_URL at this role: postgresql+psycopg2://dpa_pipeline:<password>@host/db

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dpa_pipeline') THEN
    CREATE ROLE dpa_pipeline LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
END $$;
ALTER ROLE dpa_pipeline PASSWORD :'pipeline_password';

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO dpa_pipeline;
GRANT SELECT, INSERT, DELETE ON warehouse_facts, freight_rejects TO dpa_pipeline;
GRANT SELECT, INSERT ON load_audit TO dpa_pipeline;
GRANT USAGE ON SEQUENCE load_audit_id_seq TO dpa_pipeline;
GRANT SELECT ON dpa_schema_marker TO dpa_pipeline;
