{#
  Temporal filter bounding the state the streaming engines keep. Off on the
  embedded engine (views are computed on read) and for replays of history,
  which lie outside any wall-clock window.
#}
{% macro within_retention(ts) %}
  {{ return(adapter.dispatch('within_retention', 'tradeflow')(ts)) }}
{% endmacro %}

{% macro temporal_filter_enabled() %}
  {{ return(var('temporal_filter', target.type in ['risingwave', 'materialize'])) }}
{% endmacro %}

{% macro default__within_retention(ts) -%}
  true
{%- endmacro %}

{% macro risingwave__within_retention(ts) -%}
  {%- if temporal_filter_enabled() -%}
  {{ ts }} > now() - interval '{{ var("state_retention") }}'
  {%- else -%}
  true
  {%- endif -%}
{%- endmacro %}

{% macro materialize__within_retention(ts) -%}
  {%- if temporal_filter_enabled() -%}
  mz_now() <= {{ ts }} + interval '{{ var("state_retention") }}'
  {%- else -%}
  true
  {%- endif -%}
{%- endmacro %}
