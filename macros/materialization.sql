{#
  How a model that may be refreshed by its reader is deployed (stg_execs): the
  streaming engines maintain it (a materialized view, as every model there);
  the embedded engine computes it on read (a view) unless the dbt var
  refreshed_models names it (a backtest schema: a materialized view its
  reader refreshes after each write).
#}
{% macro refreshable_materialization(model_name) %}
  {{ return(adapter.dispatch('refreshable_materialization', 'tradeflow')(model_name)) }}
{% endmacro %}

{% macro default__refreshable_materialization(model_name) %}{{ return('materialized_view') }}{% endmacro %}

{% macro postgres__refreshable_materialization(model_name) %}
  {{ return('materialized_view' if model_name in var('refreshed_models') else 'view') }}
{% endmacro %}

{#- dbt-risingwave and dbt-materialize inherit PostgreSQL's dispatch: stay on the default. #}
{% macro risingwave__refreshable_materialization(model_name) %}{{ return(default__refreshable_materialization(model_name)) }}{% endmacro %}
{% macro materialize__refreshable_materialization(model_name) %}{{ return(default__refreshable_materialization(model_name)) }}{% endmacro %}
