-- Least-privilege roles for tradeflow on Materialize: the same five roles and
-- grants as tradeflow/ops/roles.py creates on the embedded engine (docs/security.md).
--
-- Not exercised by the test suite: Materialize cannot run on the development
-- and CI machines (no Docker). Written against Materialize's documentation
-- (CREATE ROLE, GRANT PRIVILEGE, "privileges by command"); try it on a
-- staging environment first.
--
-- Run with psql >= 15 (\getenv) as mz_system (self-managed) or an organization
-- admin (Cloud), after `tradeflow deploy`:
--   export TRADEFLOW_INGESTER_PASSWORD=... (all five; self-managed only)
--   psql "host=$MATERIALIZE_HOST port=6875 dbname=materialize user=mz_system sslmode=require" \
--        -v create_roles=1 -f deploy/roles/materialize.sql
-- Passwords come from the environment only (not from argv, where `ps` shows
-- them); Materialize receives them in the statement text, so connect over TLS.
-- Do not add -e/-a: psql would echo the statements, passwords included.
-- Re-run without create_roles after every deploy (dbt-materialize rebuilds
-- views and materialized views, and grants do not carry over to the new
-- objects). set_passwords=1 rotates passwords.
-- Variables: schema (default tradeflow), cluster (default quickstart, as
-- MATERIALIZE_CLUSTER), cloud=1 on Materialize Cloud.
--
-- Differences from the embedded engine:
-- * RBAC is enforced only with enable_rbac_checks on (off by default on
--   self-managed, and in the emulator): until then every role is a superuser
--   and these grants change nothing. The script warns when it is off.
-- * LOGIN and PASSWORD exist on self-managed Materialize only (password
--   authentication is in public preview there). On Cloud, roles are functional:
--   create them with cloud=1, then GRANT tradeflow_<role> TO "<service account>".
-- * No CREATE ROLE IF NOT EXISTS: roles are created once (create_roles=1).
-- * Every query also needs USAGE on the cluster it runs on (granted below).
-- * A view is read with SELECT on the view only, but its owner needs SELECT
--   on everything in its definition, explicitly even when a superuser: let the
--   role dbt connects as own the raw tables and models.
-- * No REVOKE ALL sweep: a privilege dropped from this file must be revoked by hand.

\set ON_ERROR_STOP on
\if :{?schema}
\else
  \set schema tradeflow
\endif
\if :{?cluster}
\else
  \set cluster quickstart
\endif
\set audit_schema :schema '_audit'

\if :{?create_roles}
  \if :{?cloud}
    CREATE ROLE tradeflow_ingester;
    CREATE ROLE tradeflow_gate;
    CREATE ROLE tradeflow_adapter;
    CREATE ROLE tradeflow_operator;
    CREATE ROLE tradeflow_reader;
  \else
    \getenv ingester_password TRADEFLOW_INGESTER_PASSWORD
    \getenv gate_password TRADEFLOW_GATE_PASSWORD
    \getenv adapter_password TRADEFLOW_ADAPTER_PASSWORD
    \getenv operator_password TRADEFLOW_OPERATOR_PASSWORD
    \getenv reader_password TRADEFLOW_READER_PASSWORD
    -- an unset variable is left as ":'name'": a syntax error, so a missing password stops the script
    CREATE ROLE tradeflow_ingester WITH LOGIN NOSUPERUSER PASSWORD :'ingester_password';
    CREATE ROLE tradeflow_gate WITH LOGIN NOSUPERUSER PASSWORD :'gate_password';
    CREATE ROLE tradeflow_adapter WITH LOGIN NOSUPERUSER PASSWORD :'adapter_password';
    CREATE ROLE tradeflow_operator WITH LOGIN NOSUPERUSER PASSWORD :'operator_password';
    CREATE ROLE tradeflow_reader WITH LOGIN NOSUPERUSER PASSWORD :'reader_password';
  \endif
\elif :{?set_passwords}
  \getenv ingester_password TRADEFLOW_INGESTER_PASSWORD
  \getenv gate_password TRADEFLOW_GATE_PASSWORD
  \getenv adapter_password TRADEFLOW_ADAPTER_PASSWORD
  \getenv operator_password TRADEFLOW_OPERATOR_PASSWORD
  \getenv reader_password TRADEFLOW_READER_PASSWORD
  ALTER ROLE tradeflow_ingester WITH PASSWORD :'ingester_password';
  ALTER ROLE tradeflow_gate WITH PASSWORD :'gate_password';
  ALTER ROLE tradeflow_adapter WITH PASSWORD :'adapter_password';
  ALTER ROLE tradeflow_operator WITH PASSWORD :'operator_password';
  ALTER ROLE tradeflow_reader WITH PASSWORD :'reader_password';
\endif

SHOW enable_rbac_checks \gset
\if :enable_rbac_checks
\else
  \echo 'WARNING: enable_rbac_checks is off: every role has superuser privileges until mz_system runs'
  \echo '         ALTER SYSTEM SET enable_rbac_checks = on;'
\endif

GRANT USAGE ON DATABASE :"DBNAME" TO tradeflow_ingester, tradeflow_gate, tradeflow_adapter, tradeflow_operator, tradeflow_reader;
GRANT USAGE ON SCHEMA :"schema" TO tradeflow_ingester, tradeflow_gate, tradeflow_adapter, tradeflow_operator, tradeflow_reader;
GRANT USAGE ON CLUSTER :"cluster" TO tradeflow_ingester, tradeflow_gate, tradeflow_adapter, tradeflow_operator, tradeflow_reader;

-- each role's sessions (psql, BI tools, Grafana) find the views without a schema prefix (ALTER ROLE ... SET,
-- Materialize docs sql/alter-role: new sessions only)
ALTER ROLE tradeflow_ingester SET search_path TO :"schema", public;
ALTER ROLE tradeflow_gate SET search_path TO :"schema", public;
ALTER ROLE tradeflow_adapter SET search_path TO :"schema", public;
ALTER ROLE tradeflow_operator SET search_path TO :"schema", public;
ALTER ROLE tradeflow_reader SET search_path TO :"schema", public;

-- ON TABLE also names views and materialized views (Materialize accepts it for PostgreSQL compatibility)

-- ingester: dedup lookups by natural key, known accounts, pending dead letters
GRANT INSERT, SELECT ON TABLE :"schema".price_1m_history, :"schema".exec_report_history, :"schema".risk_events, :"schema".instruments TO tradeflow_ingester;
GRANT INSERT ON TABLE :"schema".dead_letter, :"schema".late_arrivals TO tradeflow_ingester;
GRANT INSERT, SELECT ON TABLE :"schema".dead_letter_replay TO tradeflow_ingester;
GRANT SELECT ON TABLE :"schema".stg_accounts, :"schema".stg_dead_letter, :"schema".stg_instruments, :"schema".margin_rates TO tradeflow_ingester;

-- gate: the views it decides from, its decisions (read back for exactly once), the drawdown block
GRANT INSERT, SELECT ON TABLE :"schema".trade_decisions TO tradeflow_gate;
GRANT INSERT ON TABLE :"schema".order_events, :"schema".risk_events, :"schema".accounts, :"schema".audit_log TO tradeflow_gate;
-- gate: operators' order requests and the last close they are priced at
GRANT SELECT ON TABLE :"schema".manual_order_requests, :"schema".price_1m_history, :"schema".exec_report_history TO tradeflow_gate;
GRANT SELECT ON TABLE :"schema".strategy_signal_history, :"schema".account_risk_inputs, :"schema".unrealized_pnl_latest, :"schema".int_pending_orders, :"schema".orders, :"schema".portfolio_state, :"schema".realized_pnl_latest, :"schema".open_positions_rollup, :"schema".strategy_weights_latest, :"schema".strategy_config, :"schema".stg_accounts, :"schema".stg_account_policy, :"schema".stg_execs, :"schema".stg_instruments, :"schema".margin_rates, :"schema".daily_returns TO tradeflow_gate;

-- adapter: accepted orders and order state (SUBSCRIBE needs SELECT and cluster USAGE only),
-- fills through the exec ingester, its feed positions
GRANT INSERT, SELECT ON TABLE :"schema".order_events, :"schema".exec_report_history, :"schema".adapter_feed_position, :"schema".risk_events TO tradeflow_adapter;
GRANT INSERT ON TABLE :"schema".dead_letter, :"schema".late_arrivals TO tradeflow_adapter;
GRANT SELECT ON TABLE :"schema".order_commands, :"schema".price_1m_history, :"schema".accepted_trade_signal_history, :"schema".orders, :"schema".stg_execs, :"schema".stg_accounts, :"schema".stg_instruments, :"schema".stg_dead_letter TO tradeflow_adapter;

-- operator: new versions on top of the current ones, cancels, the kill-switch risk event, the audit trail
GRANT INSERT, SELECT ON TABLE :"schema".account_policy TO tradeflow_operator;
GRANT INSERT ON TABLE :"schema".accounts, :"schema".order_commands, :"schema".manual_order_requests, :"schema".strategy_weight_history, :"schema".risk_events, :"schema".audit_log TO tradeflow_operator;
GRANT SELECT ON TABLE :"schema".stg_accounts, :"schema".stg_account_policy TO tradeflow_operator;

-- operator and reader: every mart (models/marts; tradeflow.ops.roles.marts() lists them)
GRANT SELECT ON TABLE :"schema".accepted_trade_signal_history, :"schema".account_exposure_by_class, :"schema".account_margin, :"schema".account_risk_inputs, :"schema".account_symbol_exposure, :"schema".account_var, :"schema".audit_history, :"schema".daily_returns, :"schema".indicator_history, :"schema".indicator_latest, :"schema".open_positions_lots, :"schema".open_positions_rollup, :"schema".order_history, :"schema".orders, :"schema".paper_trade_match_history, :"schema".pnl_timeseries, :"schema".portfolio_state, :"schema".position_close_history, :"schema".realized_pnl_latest, :"schema".return_correlation, :"schema".sma_wide, :"schema".strategy_perf_latest, :"schema".strategy_signal_history, :"schema".strategy_signal_latest, :"schema".strategy_weight_targets, :"schema".strategy_weights_latest, :"schema".trade_match_history, :"schema".trade_rejections, :"schema".trades, :"schema".unrealized_pnl_latest TO tradeflow_operator, tradeflow_reader;

-- reader: the dbt test audit views (store_failures_as view), once `dbt test` has created the schema
SELECT count(*) > 0 AS has_audit_schema FROM pg_catalog.pg_namespace WHERE nspname = :'audit_schema' \gset
\if :has_audit_schema
  GRANT USAGE ON SCHEMA :"audit_schema" TO tradeflow_reader;
  GRANT SELECT ON ALL TABLES IN SCHEMA :"audit_schema" TO tradeflow_reader;
\endif
