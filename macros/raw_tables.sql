{#
  Raw, append-only tables written by the ingesters. dbt never drops them.
  Portable shape: no primary keys (deduplication happens in staging views),
  NUMERIC without precision, TEXT without length.
#}
{% macro raw_table_columns() %}
  {{ return({
    'price_1m_history': [
      ('symbol', 'TEXT'), ('ts', 'TIMESTAMPTZ'),
      ('open', 'NUMERIC'), ('high', 'NUMERIC'), ('low', 'NUMERIC'), ('close', 'NUMERIC'), ('volume', 'NUMERIC'),
      ('source', 'TEXT'), ('batch_id', 'TEXT'), ('received_at', 'TIMESTAMPTZ')],
    'dead_letter': [
      ('dlq_id', 'TEXT'), ('kind', 'TEXT'), ('payload', 'JSONB'), ('field', 'TEXT'),
      ('reason_code', 'TEXT'), ('reason', 'TEXT'),
      ('source', 'TEXT'), ('batch_id', 'TEXT'), ('received_at', 'TIMESTAMPTZ')],
    'dead_letter_replay': [
      ('dlq_id', 'TEXT'), ('outcome', 'TEXT'), ('detail', 'TEXT'), ('replayed_at', 'TIMESTAMPTZ')],
    'exec_report_history': [
      ('account_id', 'TEXT'), ('strategy_id', 'TEXT'), ('order_id', 'TEXT'), ('fill_id', 'TEXT'),
      ('symbol', 'TEXT'), ('side', 'TEXT'), ('fill_qty', 'NUMERIC'), ('fill_price', 'NUMERIC'),
      ('fee', 'NUMERIC'), ('venue', 'TEXT'), ('exec_ts', 'TIMESTAMPTZ'),
      ('source', 'TEXT'), ('batch_id', 'TEXT'), ('received_at', 'TIMESTAMPTZ')],
    'accounts': [
      ('account_id', 'TEXT'), ('base_currency', 'TEXT'), ('initial_capital', 'NUMERIC'), ('status', 'TEXT'),
      ('max_leverage', 'NUMERIC'), ('updated_at', 'TIMESTAMPTZ'), ('updated_by', 'TEXT')],
    'account_policy': [
      ('account_id', 'TEXT'), ('max_open_symbols', 'INTEGER'), ('allow_scale_in', 'BOOLEAN'),
      ('sell_requires_long', 'BOOLEAN'), ('max_order_notional', 'NUMERIC'), ('max_position_qty', 'NUMERIC'),
      ('max_concentration_pct', 'NUMERIC'), ('max_drawdown_pct', 'NUMERIC'), ('risk_per_trade_pct', 'NUMERIC'),
      ('kill_switch', 'BOOLEAN'), ('reservation_ttl_seconds', 'INTEGER'),
      ('updated_at', 'TIMESTAMPTZ'), ('updated_by', 'TEXT'),
      ('max_sector_exposure_pct', 'NUMERIC'), ('max_correlated_exposure_pct', 'NUMERIC'),
      ('correlation_threshold', 'NUMERIC'), ('max_var_pct', 'NUMERIC'), ('var_confidence', 'NUMERIC'),
      ('margin_check', 'BOOLEAN')],
    'trade_decisions': [
      ('decision_id', 'TEXT'), ('signal_id', 'TEXT'), ('strategy_id', 'TEXT'), ('symbol', 'TEXT'), ('action', 'TEXT'),
      ('account_id', 'TEXT'), ('outcome', 'TEXT'), ('reject_code', 'TEXT'), ('qty', 'NUMERIC'),
      ('ref_price', 'NUMERIC'), ('client_order_id', 'TEXT'), ('inputs', 'JSONB'), ('signal_ts', 'TIMESTAMPTZ'),
      ('decided_at', 'TIMESTAMPTZ'), ('gate_id', 'TEXT')],
    'order_events': [
      ('client_order_id', 'TEXT'), ('account_id', 'TEXT'), ('strategy_id', 'TEXT'), ('symbol', 'TEXT'),
      ('side', 'TEXT'), ('order_type', 'TEXT'), ('time_in_force', 'TEXT'), ('qty', 'NUMERIC'),
      ('limit_price', 'NUMERIC'), ('stop_price', 'NUMERIC'), ('status', 'TEXT'), ('filled_qty', 'NUMERIC'),
      ('broker_order_id', 'TEXT'), ('reason', 'TEXT'), ('event_ts', 'TIMESTAMPTZ'), ('source', 'TEXT'),
      ('seq', 'INTEGER')],
    'order_commands': [
      ('client_order_id', 'TEXT'), ('command', 'TEXT'), ('reason', 'TEXT'),
      ('requested_at', 'TIMESTAMPTZ'), ('requested_by', 'TEXT')],
    'manual_order_requests': [
      ('request_id', 'TEXT'), ('account_id', 'TEXT'), ('strategy_id', 'TEXT'), ('symbol', 'TEXT'), ('side', 'TEXT'),
      ('qty', 'NUMERIC'), ('order_type', 'TEXT'), ('time_in_force', 'TEXT'), ('limit_price', 'NUMERIC'),
      ('stop_price', 'NUMERIC'), ('reason', 'TEXT'), ('requested_at', 'TIMESTAMPTZ'), ('requested_by', 'TEXT')],
    'adapter_feed_position': [
      ('consumer', 'TEXT'), ('feed_position', 'TEXT'), ('updated_at', 'TIMESTAMPTZ')],
    'audit_log': [
      ('audit_id', 'TEXT'), ('actor', 'TEXT'), ('action', 'TEXT'), ('target', 'TEXT'), ('details', 'JSONB'),
      ('ts', 'TIMESTAMPTZ')],
    'risk_events': [
      ('event_id', 'TEXT'), ('account_id', 'TEXT'), ('symbol', 'TEXT'), ('rule', 'TEXT'), ('severity', 'TEXT'),
      ('message', 'TEXT'), ('ts', 'TIMESTAMPTZ'), ('source', 'TEXT')],
    'instruments': [
      ('symbol', 'TEXT'), ('asset_class', 'TEXT'), ('sector', 'TEXT'), ('industry', 'TEXT'), ('currency', 'TEXT'),
      ('lot_size', 'NUMERIC'), ('tick_size', 'NUMERIC'), ('calendar', 'TEXT'), ('shortable', 'BOOLEAN'),
      ('margin_class', 'TEXT'), ('source', 'TEXT'), ('batch_id', 'TEXT'), ('received_at', 'TIMESTAMPTZ')],
    'late_arrivals': [
      ('kind', 'TEXT'), ('record_key', 'TEXT'), ('account_id', 'TEXT'), ('symbol', 'TEXT'),
      ('event_ts', 'TIMESTAMPTZ'), ('watermark_ts', 'TIMESTAMPTZ'), ('lateness_seconds', 'NUMERIC'),
      ('source', 'TEXT'), ('batch_id', 'TEXT'), ('received_at', 'TIMESTAMPTZ')],
    'strategy_weight_history': [
      ('strategy_id', 'TEXT'), ('weight', 'NUMERIC'), ('target', 'NUMERIC'), ('at', 'TIMESTAMPTZ'),
      ('updated_by', 'TEXT')],
  }) }}
{% endmacro %}

{% macro create_raw_tables() %}
  {{ return(adapter.dispatch('create_raw_tables', 'tradeflow')()) }}
{% endmacro %}

{% macro raw_table_ddl(name, columns, suffix='') -%}
  create table if not exists {{ target.schema }}.{{ name }} (
    {%- for col, typ in columns %}
    {{ col }} {{ typ }}{{ ',' if not loop.last }}
    {%- endfor %}
  ){{ suffix }}
{%- endmacro %}

{% macro postgres__create_raw_tables() %}
  create schema if not exists {{ target.schema }};
  {% for name, columns in raw_table_columns().items() %}
  {{ raw_table_ddl(name, columns) }};
  {% endfor %}
  {#- columns added since a table was first created (create table if not exists keeps it as it was) #}
  alter table {{ target.schema }}.order_events add column if not exists seq INTEGER;
  {%- for col, typ in raw_table_columns()['account_policy'][-6:] %}
  alter table {{ target.schema }}.account_policy add column if not exists {{ col }} {{ typ }};
  {%- endfor %}
  {#- The embedded engine computes views on read: these indexes keep the
      reads that matter (one symbol's recent bars, dedup lookups) bounded.
      A backtest schema (bar_indexes false) is loaded in bulk once per run: kept
      up during the load they would cost four fifths of it (the backtest builds
      the (symbol, ts) index from the loaded rows). #}
  {% if var('bar_indexes', true) %}
  create index if not exists price_1m_history_symbol_ts on {{ target.schema }}.price_1m_history (symbol, ts);
  {#- the paper adapter follows new bars in arrival order (a polling change feed) #}
  create index if not exists price_1m_history_arrival on {{ target.schema }}.price_1m_history
    (received_at, symbol, ts);
  {% else %}
  drop index if exists {{ target.schema }}.price_1m_history_symbol_ts;
  drop index if exists {{ target.schema }}.price_1m_history_arrival;
  {% endif %}
  create index if not exists dead_letter_kind on {{ target.schema }}.dead_letter (kind, received_at);
  create index if not exists dead_letter_replay_id on {{ target.schema }}.dead_letter_replay (dlq_id);
  create index if not exists exec_report_history_key on {{ target.schema }}.exec_report_history
    (account_id, strategy_id, symbol, exec_ts);
  create index if not exists exec_report_history_fill on {{ target.schema }}.exec_report_history (order_id, fill_id);
  create index if not exists risk_events_account_ts on {{ target.schema }}.risk_events (account_id, ts);
  create index if not exists trade_decisions_signal on {{ target.schema }}.trade_decisions (signal_id);
  create index if not exists trade_decisions_account on {{ target.schema }}.trade_decisions (account_id, decided_at);
  create index if not exists order_events_order on {{ target.schema }}.order_events (client_order_id, event_ts);
  create index if not exists account_policy_account on {{ target.schema }}.account_policy (account_id, updated_at);
  create index if not exists instruments_symbol on {{ target.schema }}.instruments (symbol, received_at);
  create index if not exists late_arrivals_kind on {{ target.schema }}.late_arrivals (kind, received_at);
  create index if not exists strategy_weight_history_key on {{ target.schema }}.strategy_weight_history (strategy_id, at);
{% endmacro %}

{% macro risingwave__create_raw_tables() %}
  create schema if not exists {{ target.schema }};
  {% for name, columns in raw_table_columns().items() %}
  {{ raw_table_ddl(name, columns, ' append only') }};
  {% endfor %}
{% endmacro %}

{#
  Raw tables a change feed follows (adapters/changefeed.py): on Materialize a
  feed resumes with SUBSCRIBE ... AS OF its saved position, which needs the
  table's history kept that long (RETAIN HISTORY; the default keeps about a second).
#}
{% macro followed_raw_tables() %}
  {{ return(['price_1m_history', 'order_commands']) }}
{% endmacro %}

{% macro materialize__create_raw_tables() %}
  {%- set statements = ['create schema if not exists ' ~ target.schema] -%}
  {%- for name, columns in raw_table_columns().items() -%}
    {%- set retain = " with (retain history for '" ~ var('feed_retain_history') ~ "')" -%}
    {%- do statements.append(raw_table_ddl(name, columns, retain if name in followed_raw_tables() else '')) -%}
  {%- endfor -%}
  {{ return(one_statement_per_request(statements)) }}
{% endmacro %}

{#
  Materialize refuses several DDL statements in one request ("cannot be run
  inside a transaction block"; dbt-materialize runs in autocommit, so each
  request is its own implicit transaction). When dbt runs a hook, each
  statement is sent on its own here and the hook itself is a no-op; when dbt
  only compiles (or parses), the statements are returned as text, so the
  portability lint sees them.
#}
{% macro one_statement_per_request(statements) %}
  {%- if execute and flags.WHICH in ('run', 'build', 'run-operation', 'seed', 'test', 'snapshot') -%}
    {%- for statement in statements -%}
      {%- do run_query(statement) -%}
    {%- endfor -%}
    {{ return('select 1') }}
  {%- else -%}
    {{ return(statements | join(';\n') ~ ';') }}
  {%- endif -%}
{% endmacro %}
