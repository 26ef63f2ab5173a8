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
  Two steps, so each window sum is formed once per bar (the mean and the
  deviation of a period share it) and the window functions can run in a
  window pass the caller already has (smooth()'s series_columns):
  moving_window_columns(price, price_f, mean_periods, deviation_periods, over)
  returns (name, window expression) pairs over `over` (the series'
  PARTITION BY ... ORDER BY ...), which a later SELECT of the relation turns
  into float8 indicators with moving_mean(n) and moving_stddev_pop(n).
  `price` is the NUMERIC price, `price_f` its float8 (the incremental
  deviation's input); moving_sum_inputs() adds the running sums (full_pass)
  to the relation the window columns read, moving_sum_input_names() names them.
#}
{% macro moving_sum_inputs(expr, over) -%}
  {%- if indicator_form() == 'full_pass' -%},
  sum({{ expr }}) over ({{ over }} rows between unbounded preceding and current row) as running_close,
  sum({{ expr }} * {{ expr }}) over ({{ over }} rows between unbounded preceding and current row) as running_close_sq
  {%- endif -%}
{%- endmacro %}

{% macro moving_sum_input_names() %}
  {{ return(['running_close', 'running_close_sq'] if indicator_form() == 'full_pass' else []) }}
{% endmacro %}

{% macro moving_window_columns(price, price_f, mean_periods, deviation_periods, over) %}
  {%- set columns = [] -%}
  {%- if indicator_form() == 'full_pass' -%}
    {#- the carry's frame (lag ignores it): the same window clause, so one window pass -#}
    {%- set window = over ~ ' rows between unbounded preceding and current row' -%}
    {%- for n in (mean_periods + deviation_periods) | unique -%}
      {%- do columns.append(('window_sum_' ~ n, 'running_close - coalesce(lag(running_close, ' ~ n ~ ') over (' ~ window ~ '), 0)')) -%}
    {%- endfor -%}
    {%- for n in deviation_periods -%}
      {%- do columns.append(('window_sum_sq_' ~ n, 'running_close_sq - coalesce(lag(running_close_sq, ' ~ n ~ ') over (' ~ window ~ '), 0)')) -%}
    {%- endfor -%}
  {%- else -%}
    {%- for n in mean_periods -%}
      {%- do columns.append(('window_mean_' ~ n, 'cast(avg(' ~ price ~ ') over (' ~ over ~ ' rows between ' ~ (n - 1) ~ ' preceding and current row) as double precision)')) -%}
    {%- endfor -%}
    {%- for n in deviation_periods -%}
      {%- do columns.append(('window_stddev_' ~ n, 'stddev_pop(' ~ price_f ~ ') over (' ~ over ~ ' rows between ' ~ (n - 1) ~ ' preceding and current row)')) -%}
    {%- endfor -%}
  {%- endif -%}
  {{ return(columns) }}
{% endmacro %}

{% macro moving_mean(n) -%}
  {%- if indicator_form() == 'full_pass' -%}
  cast(window_sum_{{ n }} / {{ n }} as double precision)
  {%- else -%}
  window_mean_{{ n }}
  {%- endif -%}
{%- endmacro %}

{% macro moving_stddev_pop(n) -%}
  {%- if indicator_form() == 'full_pass' -%}
  sqrt(greatest(cast({{ n }} * window_sum_sq_{{ n }} - window_sum_{{ n }} * window_sum_{{ n }} as double precision), 0)) / {{ n }}
  {%- else -%}
  window_stddev_{{ n }}
  {%- endif -%}
{%- endmacro %}
