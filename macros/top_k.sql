{#
  The first k rows per key of `relation` in `order_by` order, with `columns`.
  * default (embedded, RisingWave): row_number() <= k, which RisingWave plans
    as a GroupTopN and the embedded engine computes on read.
  * Materialize recomputes a window partition on every change to it, so there
    it is the documented top-K idiom: a LATERAL (... ORDER BY ... LIMIT k) join
    on the DISTINCT keys
    (https://materialize.com/docs/transform-data/idiomatic-materialize-sql/top-k/).
#}
{% macro first_k_per_key(relation, key, order_by, k, columns) %}
  {{ return(adapter.dispatch('first_k_per_key', 'tradeflow')(relation, key, order_by, k, columns)) }}
{% endmacro %}

{% macro default__first_k_per_key(relation, key, order_by, k, columns) -%}
  select {{ columns | join(', ') }}
  from (
      select {{ columns | join(', ') }}, row_number() over (partition by {{ key }} order by {{ order_by }}) as rank_in_key
      from {{ relation }}
  ) as ranked
  where rank_in_key <= {{ k }}
{%- endmacro %}

{#- dbt-risingwave inherits PostgreSQL's dispatch: stay on the default. #}
{% macro risingwave__first_k_per_key(relation, key, order_by, k, columns) -%}
  {{ default__first_k_per_key(relation, key, order_by, k, columns) }}
{%- endmacro %}

{% macro materialize__first_k_per_key(relation, key, order_by, k, columns) -%}
  select {% for column in columns %}first_k.{{ column }}{{ ', ' if not loop.last }}{% endfor %}
  from (select distinct {{ key }} from {{ relation }}) as keys
  inner join lateral (
      select {{ columns | join(', ') }}
      from {{ relation }} as candidates
      where candidates.{{ key }} = keys.{{ key }}
      order by {{ order_by }}
      limit {{ k }}
  ) as first_k on first_k.{{ key }} = keys.{{ key }}
{%- endmacro %}
