-- Least-privilege users for tradeflow on RisingWave: the same five roles and
-- grants as tradeflow/ops/roles.py creates on the embedded engine (docs/security.md).
--
-- Not exercised by the test suite: RisingWave cannot run on the development
-- and CI machines (no Docker). Written against RisingWave's documentation
-- (CREATE USER, GRANT on tables / views / materialized views / schemas,
-- ALTER SUBSCRIPTION ... OWNER TO); try it on a staging cluster first.
--
-- Run with psql >= 15 (\getenv) as a superuser, after `tradeflow deploy`:
--   export TRADEFLOW_INGESTER_PASSWORD=... TRADEFLOW_GATE_PASSWORD=... (all five)
--   psql "host=$RISINGWAVE_HOST port=4566 dbname=dev user=root sslmode=require" \
--        -v create_users=1 -f deploy/roles/risingwave.sql
-- Passwords come from the environment only (not from argv, where `ps` shows
-- them). RisingWave receives them in the statement text: connect over TLS and
-- keep statement logging off while this runs.
-- Do not add -e/-a: psql would echo the statements, passwords included.
-- Re-run without create_users after every deploy: a --full-refresh drops and
-- recreates materialized views, and their grants with them. With
-- set_passwords=1 instead it rotates the passwords of existing users.
-- Variables: schema (default tradeflow).
--
-- Differences from the embedded engine:
-- * RisingWave has no CREATE USER IF NOT EXISTS (nor does PostgreSQL): users
--   are created once (create_users=1); grants can be re-run at will.
-- * Every model, staging included, is a materialized view: the grant names
--   the object kind. Reading a view or materialized view needs SELECT on it
--   only, as in PostgreSQL (RisingWave's row-level-security guide relies on it).
-- * No REVOKE ALL sweep: a privilege dropped from this file must be revoked by hand.
-- * The adapter's change feeds use subscriptions. They are created here, by the
--   owner, and handed to the adapter, instead of granting it CREATE on the
--   schema. If the feed's own CREATE SUBSCRIPTION IF NOT EXISTS is refused on
--   your version, GRANT CREATE ON SCHEMA to tradeflow_adapter (broader).

\set ON_ERROR_STOP on
\if :{?schema}
\else
  \set schema tradeflow
\endif
\set audit_schema :schema '_audit'

\if :{?create_users}
  \getenv ingester_password TRADEFLOW_INGESTER_PASSWORD
  \getenv gate_password TRADEFLOW_GATE_PASSWORD
  \getenv adapter_password TRADEFLOW_ADAPTER_PASSWORD
  \getenv operator_password TRADEFLOW_OPERATOR_PASSWORD
  \getenv reader_password TRADEFLOW_READER_PASSWORD
  -- an unset variable is left as ":'name'": a syntax error, so a missing password stops the script
  CREATE USER tradeflow_ingester WITH NOSUPERUSER NOCREATEDB NOCREATEUSER LOGIN PASSWORD :'ingester_password';
  CREATE USER tradeflow_gate WITH NOSUPERUSER NOCREATEDB NOCREATEUSER LOGIN PASSWORD :'gate_password';
  CREATE USER tradeflow_adapter WITH NOSUPERUSER NOCREATEDB NOCREATEUSER LOGIN PASSWORD :'adapter_password';
  CREATE USER tradeflow_operator WITH NOSUPERUSER NOCREATEDB NOCREATEUSER LOGIN PASSWORD :'operator_password';
  CREATE USER tradeflow_reader WITH NOSUPERUSER NOCREATEDB NOCREATEUSER LOGIN PASSWORD :'reader_password';
\elif :{?set_passwords}
  \getenv ingester_password TRADEFLOW_INGESTER_PASSWORD
  \getenv gate_password TRADEFLOW_GATE_PASSWORD
  \getenv adapter_password TRADEFLOW_ADAPTER_PASSWORD
  \getenv operator_password TRADEFLOW_OPERATOR_PASSWORD
  \getenv reader_password TRADEFLOW_READER_PASSWORD
  ALTER USER tradeflow_ingester WITH PASSWORD :'ingester_password';
  ALTER USER tradeflow_gate WITH PASSWORD :'gate_password';
  ALTER USER tradeflow_adapter WITH PASSWORD :'adapter_password';
  ALTER USER tradeflow_operator WITH PASSWORD :'operator_password';
  ALTER USER tradeflow_reader WITH PASSWORD :'reader_password';
\endif

-- one grantee per statement: RisingWave's GRANT documents a single user
GRANT CONNECT ON DATABASE :"DBNAME" TO tradeflow_ingester;
GRANT USAGE ON SCHEMA :"schema" TO tradeflow_ingester;
GRANT CONNECT ON DATABASE :"DBNAME" TO tradeflow_gate;
GRANT USAGE ON SCHEMA :"schema" TO tradeflow_gate;
GRANT CONNECT ON DATABASE :"DBNAME" TO tradeflow_adapter;
GRANT USAGE ON SCHEMA :"schema" TO tradeflow_adapter;
GRANT CONNECT ON DATABASE :"DBNAME" TO tradeflow_operator;
GRANT USAGE ON SCHEMA :"schema" TO tradeflow_operator;
GRANT CONNECT ON DATABASE :"DBNAME" TO tradeflow_reader;
GRANT USAGE ON SCHEMA :"schema" TO tradeflow_reader;

-- ingester: dedup lookups by natural key, known accounts, pending dead letters
GRANT INSERT, SELECT ON TABLE :"schema".price_1m_history, :"schema".exec_report_history, :"schema".risk_events, :"schema".instruments TO tradeflow_ingester;
GRANT INSERT ON TABLE :"schema".dead_letter, :"schema".late_arrivals TO tradeflow_ingester;
GRANT INSERT, SELECT ON TABLE :"schema".dead_letter_replay TO tradeflow_ingester;
GRANT SELECT ON MATERIALIZED VIEW :"schema".stg_accounts, :"schema".stg_dead_letter, :"schema".stg_instruments, :"schema".margin_rates TO tradeflow_ingester;

-- gate: the views it decides from, its decisions (read back for exactly once), the drawdown block
GRANT INSERT, SELECT ON TABLE :"schema".trade_decisions TO tradeflow_gate;
GRANT INSERT ON TABLE :"schema".order_events, :"schema".risk_events, :"schema".accounts, :"schema".audit_log TO tradeflow_gate;
-- gate: operators' order requests and the last close they are priced at
GRANT SELECT ON TABLE :"schema".manual_order_requests, :"schema".price_1m_history, :"schema".exec_report_history TO tradeflow_gate;
GRANT SELECT ON MATERIALIZED VIEW :"schema".strategy_signal_history, :"schema".account_risk_inputs, :"schema".unrealized_pnl_latest, :"schema".int_pending_orders, :"schema".orders, :"schema".portfolio_state, :"schema".realized_pnl_latest, :"schema".open_positions_rollup, :"schema".strategy_weights_latest TO tradeflow_gate;
GRANT SELECT ON MATERIALIZED VIEW :"schema".strategy_config, :"schema".stg_accounts, :"schema".stg_account_policy, :"schema".stg_execs TO tradeflow_gate;
GRANT SELECT ON MATERIALIZED VIEW :"schema".stg_instruments, :"schema".margin_rates, :"schema".daily_returns TO tradeflow_gate;

-- adapter: accepted orders and order state, fills through the exec ingester, its feed positions
GRANT INSERT, SELECT ON TABLE :"schema".order_events, :"schema".exec_report_history, :"schema".adapter_feed_position, :"schema".risk_events TO tradeflow_adapter;
GRANT INSERT ON TABLE :"schema".dead_letter, :"schema".late_arrivals TO tradeflow_adapter;
GRANT SELECT ON TABLE :"schema".order_commands, :"schema".price_1m_history TO tradeflow_adapter;
GRANT SELECT ON MATERIALIZED VIEW :"schema".accepted_trade_signal_history, :"schema".orders TO tradeflow_adapter;
GRANT SELECT ON MATERIALIZED VIEW :"schema".stg_execs, :"schema".stg_accounts, :"schema".stg_instruments, :"schema".stg_dead_letter TO tradeflow_adapter;
-- the subscriptions `tradeflow adapter run` follows (consumer "adapter", retention as in open_feed)
CREATE SUBSCRIPTION IF NOT EXISTS :"schema"."adapter-orders_sub" FROM :"schema".accepted_trade_signal_history WITH (retention = '1D');
CREATE SUBSCRIPTION IF NOT EXISTS :"schema"."adapter-bars_sub" FROM :"schema".price_1m_history WITH (retention = '1D');
CREATE SUBSCRIPTION IF NOT EXISTS :"schema"."adapter-commands_sub" FROM :"schema".order_commands WITH (retention = '1D');
ALTER SUBSCRIPTION :"schema"."adapter-orders_sub" OWNER TO tradeflow_adapter;
ALTER SUBSCRIPTION :"schema"."adapter-bars_sub" OWNER TO tradeflow_adapter;
ALTER SUBSCRIPTION :"schema"."adapter-commands_sub" OWNER TO tradeflow_adapter;

-- operator: new versions on top of the current ones, cancels, the kill-switch risk event, the audit trail
GRANT INSERT, SELECT ON TABLE :"schema".account_policy TO tradeflow_operator;
GRANT INSERT ON TABLE :"schema".accounts, :"schema".order_commands, :"schema".manual_order_requests, :"schema".strategy_weight_history, :"schema".risk_events, :"schema".audit_log TO tradeflow_operator;
GRANT SELECT ON MATERIALIZED VIEW :"schema".stg_accounts, :"schema".stg_account_policy TO tradeflow_operator;

-- operator and reader: every mart (models/marts; tradeflow.ops.roles.marts() lists them)
GRANT SELECT ON MATERIALIZED VIEW :"schema".accepted_trade_signal_history, :"schema".account_exposure_by_class, :"schema".account_margin, :"schema".account_risk_inputs, :"schema".account_symbol_exposure, :"schema".account_var, :"schema".audit_history, :"schema".daily_returns, :"schema".indicator_history, :"schema".indicator_latest, :"schema".open_positions_lots, :"schema".open_positions_rollup, :"schema".order_history, :"schema".orders, :"schema".paper_trade_match_history, :"schema".pnl_timeseries, :"schema".portfolio_state, :"schema".position_close_history, :"schema".realized_pnl_latest, :"schema".return_correlation, :"schema".sma_wide, :"schema".strategy_perf_latest, :"schema".strategy_signal_history, :"schema".strategy_signal_latest, :"schema".strategy_weight_targets, :"schema".strategy_weights_latest, :"schema".trade_match_history, :"schema".trade_rejections, :"schema".trades, :"schema".unrealized_pnl_latest TO tradeflow_operator;
GRANT SELECT ON MATERIALIZED VIEW :"schema".accepted_trade_signal_history, :"schema".account_exposure_by_class, :"schema".account_margin, :"schema".account_risk_inputs, :"schema".account_symbol_exposure, :"schema".account_var, :"schema".audit_history, :"schema".daily_returns, :"schema".indicator_history, :"schema".indicator_latest, :"schema".open_positions_lots, :"schema".open_positions_rollup, :"schema".order_history, :"schema".orders, :"schema".paper_trade_match_history, :"schema".pnl_timeseries, :"schema".portfolio_state, :"schema".position_close_history, :"schema".realized_pnl_latest, :"schema".return_correlation, :"schema".sma_wide, :"schema".strategy_perf_latest, :"schema".strategy_signal_history, :"schema".strategy_signal_latest, :"schema".strategy_weight_targets, :"schema".strategy_weights_latest, :"schema".trade_match_history, :"schema".trade_rejections, :"schema".trades, :"schema".unrealized_pnl_latest TO tradeflow_reader;

-- reader: the dbt test audit views (store_failures_as view), once `dbt test` has created the schema
SELECT count(*) > 0 AS has_audit_schema FROM pg_catalog.pg_namespace WHERE nspname = :'audit_schema' \gset
\if :has_audit_schema
  GRANT USAGE ON SCHEMA :"audit_schema" TO tradeflow_reader;
  GRANT SELECT ON ALL VIEWS IN SCHEMA :"audit_schema" TO tradeflow_reader;
\endif
