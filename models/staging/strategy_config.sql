-- The registered strategies, rendered from the `strategies` var in
-- dbt_project.yml (one entry per strategy). params_hash identifies the exact
-- parameters a signal was computed with.
{% set rows = [] %}
{% for strategy_id, cfg in var('strategies').items() %}
  {% set params_json = tojson(cfg['params'], sort_keys=True) %}
  {% do rows.append(
      "select '" ~ strategy_id ~ "' as strategy_id, "
      ~ cfg['version'] ~ " as strategy_version, "
      ~ "'" ~ cfg['timeframe'] ~ "' as timeframe, "
      ~ "'" ~ params_json ~ "' as params_json, "
      ~ "'" ~ local_md5(params_json)[:16] ~ "' as params_hash, "
      ~ (cfg['enabled'] | string | lower) ~ " as enabled") %}
{% endfor %}

with registered as (
    {{ rows | join('\n    union all\n    ') }}
)

select
    strategy_id,
    strategy_version,
    timeframe,
    params_json::jsonb as params,
    params_hash,
    enabled
from registered
