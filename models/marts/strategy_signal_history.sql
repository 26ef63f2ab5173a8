-- Every signal of every registered strategy (the `strategies` var).
{% for strategy_id in var('strategies') %}
select * from {{ ref('strategy_' ~ strategy_id) }}
{% if not loop.last %}union all{% endif %}
{% endfor %}
