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
    'risk_events': [
      ('event_id', 'TEXT'), ('account_id', 'TEXT'), ('symbol', 'TEXT'), ('rule', 'TEXT'), ('severity', 'TEXT'),
      ('message', 'TEXT'), ('ts', 'TIMESTAMPTZ'), ('source', 'TEXT')],
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
  {#- The embedded engine computes views on read: these indexes keep the
      reads that matter (one symbol's recent bars, dedup lookups) bounded. #}
  create index if not exists price_1m_history_symbol_ts on {{ target.schema }}.price_1m_history (symbol, ts);
  create index if not exists dead_letter_kind on {{ target.schema }}.dead_letter (kind, received_at);
  create index if not exists dead_letter_replay_id on {{ target.schema }}.dead_letter_replay (dlq_id);
  create index if not exists exec_report_history_key on {{ target.schema }}.exec_report_history
    (account_id, strategy_id, symbol, exec_ts);
  create index if not exists exec_report_history_fill on {{ target.schema }}.exec_report_history (order_id, fill_id);
  create index if not exists risk_events_account_ts on {{ target.schema }}.risk_events (account_id, ts);
{% endmacro %}

{% macro risingwave__create_raw_tables() %}
  create schema if not exists {{ target.schema }};
  {% for name, columns in raw_table_columns().items() %}
  {{ raw_table_ddl(name, columns, ' append only') }};
  {% endfor %}
{% endmacro %}

{% macro materialize__create_raw_tables() %}
  create schema if not exists {{ target.schema }};
  {% for name, columns in raw_table_columns().items() %}
  {{ raw_table_ddl(name, columns) }};
  {% endfor %}
{% endmacro %}
