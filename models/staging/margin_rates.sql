-- Margin rates per margin class, rendered from the margin_classes var in
-- dbt_project.yml: initial and maintenance margin as fractions of gross
-- exposure. is_default marks the class of a symbol with no instruments row.
{% set rows = [] %}
{% for margin_class, rates in var('margin_classes').items() %}
  {% do rows.append(
      "select '" ~ margin_class ~ "' as margin_class, "
      ~ "cast(" ~ rates['initial'] ~ " as numeric) as initial_rate, "
      ~ "cast(" ~ rates['maintenance'] ~ " as numeric) as maintenance_rate, "
      ~ ((margin_class == var('default_margin_class')) | string | lower) ~ " as is_default") %}
{% endfor %}
{% if var('default_margin_class') not in var('margin_classes') %}
  {{ exceptions.raise_compiler_error("var default_margin_class must be one of margin_classes, got "
                                     ~ var('default_margin_class')) }}
{% endif %}

{{ rows | join('\nunion all\n') }}
