{#
  Bars that enter the daily closes of the risk views (daily_returns). The
  streaming engines keep risk_retention of bars there (longer than the
  indicators' state_retention: VaR needs months of days, not hours of bars);
  off with the other temporal filters for replays. The embedded engine reads
  the bars that closed before the reader's as_of (tradeflow.engine.read_scope).
#}
{% macro risk_bars_filter(ts) %}
  {{ return(adapter.dispatch('risk_bars_filter', 'tradeflow')(ts)) }}
{% endmacro %}

{% macro default__risk_bars_filter(ts) -%}
  true
{%- endmacro %}

{% macro postgres__risk_bars_filter(ts) -%}
  {{ closed_before_as_of(ts) }}
{%- endmacro %}

{% macro risingwave__risk_bars_filter(ts) -%}
  {%- if temporal_filter_enabled() -%}
  {{ ts }} > now() - interval '{{ var("risk_retention") }}'
  {%- else -%}
  true
  {%- endif -%}
{%- endmacro %}

{% macro materialize__risk_bars_filter(ts) -%}
  {%- if temporal_filter_enabled() -%}
  mz_now() <= {{ ts }} + interval '{{ var("risk_retention") }}'
  {%- else -%}
  true
  {%- endif -%}
{%- endmacro %}

{#- Two-sided normal quantiles the parametric VaR multiplies the P&L's standard deviation by. #}
{% macro normal_quantile(confidence) -%}
  {{ {95: 1.6448536269514722, 99: 2.3263478740408408}[confidence] }}
{%- endmacro %}
