{# Every row satisfies the boolean `expression` (NULL counts as holding). #}
{% test expression_holds(model, expression) %}
select *
from {{ model }}
where not coalesce({{ expression }}, true)
{% endtest %}
