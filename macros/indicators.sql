{#
  Moving means and deviations over the last n bars of a series, one form per
  indicator_form() (udfs/smoothing.sql):
  * full_pass (embedded): a NUMERIC running sum, and the sum of the last n
    bars as its difference with the running sum n bars back (lag): O(1) per
    row, where PostgreSQL recomputes a frame row by row. Exact: two means
    that are equal in decimals stay equal as float8, so a crossover on a tie
    (fast == slow) is decided as TA-Lib over exact inputs and NautilusTrader
    decide it, not by rounding noise (a float8 running sum over a million
    bars flipped such ties). The deviation comes from the same exact sums
    (a NUMERIC running sum of squares): n·Σx² − (Σx)² over the last n bars
    is exact, so nothing cancels, and one lag replaces a frame PostgreSQL
    re-aggregates row by row (each of its n rows fetched again per bar).
  * incremental (streaming engines): NUMERIC aggregates over a bounded ROWS frame.
  `expr` is the NUMERIC price (moving_stddev_pop's full_pass form reads
  the running sums, its incremental form `expr`); the means come out as float8, the indicators'
  arithmetic. `over` is the series' window (PARTITION BY ... ORDER BY ...);
  moving_sum_inputs() adds the running sum to the relation moving_mean() reads.
#}
{% macro moving_sum_inputs(expr, over) -%}
  {%- if indicator_form() == 'full_pass' -%},
  sum({{ expr }}) over ({{ over }} rows between unbounded preceding and current row) as running_close,
  sum({{ expr }} * {{ expr }}) over ({{ over }} rows between unbounded preceding and current row) as running_close_sq
  {%- endif -%}
{%- endmacro %}

{% macro moving_mean(expr, n, over) -%}
  {%- if indicator_form() == 'full_pass' -%}
  cast((running_close - coalesce(lag(running_close, {{ n }}) over ({{ over }}), 0)) / {{ n }} as double precision)
  {%- else -%}
  cast(avg({{ expr }}) over ({{ over }} rows between {{ n - 1 }} preceding and current row) as double precision)
  {%- endif -%}
{%- endmacro %}

{% macro moving_stddev_pop(expr, n, over) -%}
  {%- if indicator_form() == 'full_pass' -%}
  {%- set window_sum -%}(running_close - coalesce(lag(running_close, {{ n }}) over ({{ over }}), 0)){%- endset -%}
  sqrt(greatest(cast({{ n }} * (running_close_sq - coalesce(lag(running_close_sq, {{ n }}) over ({{ over }}), 0))
      - {{ window_sum }} * {{ window_sum }} as double precision), 0)) / {{ n }}
  {%- else -%}
  stddev_pop({{ expr }}) over ({{ over }} rows between {{ n - 1 }} preceding and current row)
  {%- endif -%}
{%- endmacro %}
