{#
  Moving means and deviations over the last n bars of a series, one form per
  indicator_form() (udfs/smoothing.sql):
  * full_pass (embedded): a float8 running sum, and the sum of the last n bars
    as its difference with the running sum n bars back (lag): O(1) per row,
    where PostgreSQL recomputes a float8 frame row by row (float8 aggregates
    have no inverse transition). Rounding grows with the series' length L
    like eps * L / n relative (2e-11 for n = 5 over a million bars), as in
    TA-Lib's own running sum. The deviation keeps a 20-row frame: a
    difference of running sums of squares would cancel.
  * incremental (streaming engines): aggregates over a bounded ROWS frame.
  `over` is the series' window (PARTITION BY ... ORDER BY ...); moving_sum_inputs()
  adds the running sum to the relation moving_mean() reads.
#}
{% macro moving_sum_inputs(expr, over) -%}
  {%- if indicator_form() == 'full_pass' -%},
  sum({{ expr }}) over ({{ over }} rows between unbounded preceding and current row) as running_close
  {%- endif -%}
{%- endmacro %}

{% macro moving_mean(expr, n, over) -%}
  {%- if indicator_form() == 'full_pass' -%}
  (running_close - coalesce(lag(running_close, {{ n }}) over ({{ over }}), 0)) / {{ n }}
  {%- else -%}
  avg({{ expr }}) over ({{ over }} rows between {{ n - 1 }} preceding and current row)
  {%- endif -%}
{%- endmacro %}

{% macro moving_stddev_pop(expr, n, over) -%}
  stddev_pop({{ expr }}) over ({{ over }} rows between {{ n - 1 }} preceding and current row)
{%- endmacro %}
