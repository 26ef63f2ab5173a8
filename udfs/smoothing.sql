{#
  Exponential smoothing: EMA (alpha = 2/(n+1)) and Wilder's smoothing
  (alpha = 1/n) for RSI and ATR, seeded like TA-Lib with the simple mean of the
  first n inputs. Each is a linear filter: counting inputs from 1 (i), with
  r = 1 - alpha, the value at input t >= n is

      E_t = sum_{s <= t} r^(t-s) * c_s * x_s,   c_s = r^(s-n) / n  for s <= n (the seed)
                                               c_s = alpha          for s > n

  which is exactly TA-Lib's recursion E_n = mean(x_1..x_n), E_t = E_{t-1} + alpha (x_t - E_{t-1}).
  One sum, two forms (indicator_form(), dispatched per engine):

  * full_pass (embedded PostgreSQL: a fast full pass, exact). A series' bars
    are cut into blocks, its UTC days. Inside a block the sum is
    r^(t-k0) * (running sum of c_s x_s r^-(s-k0)), k0 the block's first row:
    a built-in float8 running sum, which PostgreSQL advances one row at a time
    (a day has at most 1440 one-minute bars: r^-1439 is 1e139 for EMA 9, far
    inside float8's range). The carry from earlier blocks, E_{k0-1}, is the
    recursion C_b = r^u L_b + r^(u+1) C_{b-1} over block ends only (u the
    block's last row number): a tiny aggregate called once per day. The day
    is also the VWAP session, so every window of the pass sorts the same
    way: PostgreSQL sorts the bars once. No truncation: identical to TA-Lib
    up to float rounding.
  * incremental (RisingWave, Materialize: bounded work per new bar): a lag join. The sum cut
    after h terms, h the smallest with r^h < smoothing_eps, as an equality join
    on the per-series bar number: each bar s fans out to the bars s + j,
    j < h, through a constant relation of lag weights r^j, and the values are
    a GROUP BY on (series, s + j). A new bar costs h join rows and h aggregate
    updates whatever the history (the bar number itself is row_number() for
    now, which shifts when retention drops a series' oldest bar: see
    docs/portability.md). Exact while a series has fewer than h bars; after, the dropped weight is below eps (1e-15 by
    default: MACD is a difference of two EMAs some 1e-5 of the price apart, so
    the cut must stay far below 1e-9 of MACD, not of the price).
    (Materialize's "LAG -> self join on a regularly increasing field" pattern,
    https://materialize.com/docs/transform-data/idiomatic-materialize-sql/lag/)

  Both forms are plain SQL and run on PostgreSQL too: the TA-Lib test checks each.

  smooth(relation, specs, keep) returns a SELECT of the relation's columns
  named in keep plus one column per spec. The relation needs symbol, timeframe,
  bar_ts and seq (1, 2, ... per series in bar order, no gaps), and for
  full_pass utc_day and the columns of smoothing_block_columns(). A spec is (name, input column, alpha, n, leading_nulls):
  leading_nulls = rows at the start of each series whose input is NULL by
  construction (1 for a change from the previous close, 25 for MACD); the
  input must be non-NULL after them. differences: (name, spec a, spec b),
  a - b as one more column; the lag join sums it term by term, which keeps
  MACD (a small difference of two EMAs near the price) as exact as the EMAs.
  series_columns: (name, expression) pairs of window functions over the
  series (PARTITION BY symbol, timeframe ORDER BY utc_day, bar_ts), returned
  as more columns. full_pass computes them in the carry's window pass (with
  its frame, the same window clause: no window pass of their own);
  incremental over the relation, before the join.
#}

{% macro ema_spec(name, expr, n, leading_nulls=0) %}{{ return((name, expr, 2.0 / (n + 1), n, leading_nulls)) }}{% endmacro %}
{% macro wilder_spec(name, expr, n, leading_nulls=0) %}{{ return((name, expr, 1.0 / n, n, leading_nulls)) }}{% endmacro %}

{% macro indicator_form() %}
  {{ return(var('indicator_form', adapter.dispatch('indicator_form', 'tradeflow')())) }}
{% endmacro %}
{% macro default__indicator_form() %}{{ return('full_pass') }}{% endmacro %}
{% macro risingwave__indicator_form() %}{{ return('incremental') }}{% endmacro %}
{% macro materialize__indicator_form() %}{{ return('incremental') }}{% endmacro %}

{% macro smooth(relation, specs, keep, differences=[], series_columns=[]) %}
  {%- set form = indicator_form() -%}
  {%- if form == 'full_pass' -%}{{ return(smooth_blocks(relation, specs, keep, differences, series_columns)) }}
  {%- elif form == 'incremental' -%}{{ return(smooth_lag_join(relation, specs, keep, differences, series_columns)) }}
  {%- else -%}{{ exceptions.raise_compiler_error("indicator_form must be full_pass or incremental, not " ~ form) }}
  {%- endif -%}
{% endmacro %}

{# c_s x_s for the spec's input at bar number `seq`. #}
{% macro seeded_input(spec, seq) -%}
  {%- set name, expr, alpha, n, skip = spec -%}
  ({{ expr }})::float8 * case when {{ seq }} - {{ skip }} > {{ n }} then {{ alpha }}
      else power({{ 1 - alpha }}::float8, {{ seq }} - {{ skip }} - {{ n }}) / {{ n }} end
{%- endmacro %}

{# Number of terms after which the weight left on older inputs drops below eps. #}
{% macro smoothing_horizon(alpha, eps) %}
  {% set ns = namespace(weight=1.0, rows=0) %}
  {% for _ in range(100000) if ns.weight >= eps %}
    {% set ns.weight = ns.weight * (1 - alpha) %}
    {% set ns.rows = ns.rows + 1 %}
  {% endfor %}
  {{ return(ns.rows) }}
{% endmacro %}

{# full_pass: each bar's place in its block (the UTC day) and the decays r^block_row of
   the specs' distinct r, as columns of the relation smooth() reads (computed where
   `series` and `day`, the windows over the series and the day, are; once per bar). #}
{% macro smoothing_block_columns(series, day, specs) -%}
  {%- if indicator_form() == 'full_pass' -%},
  row_number() over {{ day }} - 1 as block_row,
  lead(utc_day) over {{ series }} is distinct from utc_day as block_end
  {%- for alpha in specs | map(attribute=2) | unique %},
  power({{ 1 - alpha }}::float8, row_number() over {{ day }} - 1) as {{ decay_column(alpha) }}
  {%- endfor -%}
  {%- endif -%}
{%- endmacro %}

{% macro smoothing_block_column_names(specs) %}
  {%- set names = [] -%}
  {%- if indicator_form() == 'full_pass' -%}
    {%- do names.extend(['block_row', 'block_end']) -%}
    {%- for alpha in specs | map(attribute=2) | unique %}{% do names.append(decay_column(alpha)) %}{% endfor -%}
  {%- endif -%}
  {{ return(names) }}
{% endmacro %}

{% macro decay_column(alpha) %}{{ return('decay_' ~ ((1 - alpha) * 1000000000) | int) }}{% endmacro %}

{% macro smooth_blocks(relation, specs, keep, differences, series_columns) -%}
  {%- set keep = keep + ((['utc_day'] + smoothing_block_column_names(specs)) | reject('in', keep) | list)
      + (series_columns | map(attribute=0) | list) -%}
  with block_sums as (
      select
          {{ relation }}.*
          {%- for spec in specs %},
          sum({{ seeded_input(spec, 'seq') }} / {{ decay_column(spec[2]) }}) over (
              partition by symbol, timeframe, utc_day order by bar_ts
              rows between unbounded preceding and current row) as {{ spec[0] }}_block_sum
          {%- endfor %}
      from {{ relation }}
  ),
  carried as (
      -- E_t = r^u S_t + r^(u+1) C_(b-1); the carry window takes the rows up to this one,
      -- so on a block's last row it is already C_b = E_t. Ordered like block_sums'
      -- windows: PostgreSQL does not sort again.
      select
          {% for column in keep %}{{ column }}{{ ',' if not loop.last }}{% endfor %}
          {%- for name, expr, alpha, n, skip in specs %}
          {%- set decay = decay_column(alpha) %},
          case when seq - {{ skip }} >= {{ n }} then
              case when block_end then {{ name }}_carry
                   else {{ name }}_block_sum * {{ decay }} + {{ decay }} * {{ 1 - alpha }} * coalesce({{ name }}_carry, 0) end
          end as {{ name }}
          {%- endfor %}
      from (
          select
              block_sums.*
              {%- for name, expr in series_columns %},
              {{ expr }} as {{ name }}
              {%- endfor %}
              {%- for name, expr, alpha, n, skip in specs %}
              {%- set decay = decay_column(alpha) %},
              {{ target.schema }}.tf_carry(
                  case when block_end then {{ name }}_block_sum * {{ decay }} end,
                  case when block_end then {{ decay }} * {{ 1 - alpha }} end
              ) over (partition by symbol, timeframe order by utc_day, bar_ts
                      rows between unbounded preceding and current row) as {{ name }}_carry
              {%- endfor %}
          from block_sums
      ) as with_carry
  )
  select
      carried.*
      {%- for name, a, b in differences %},
      {{ a }} - {{ b }} as {{ name }}
      {%- endfor %}
  from carried
{%- endmacro %}

{% macro smooth_lag_join(relation, specs, keep, differences, series_columns) -%}
  {%- set eps = var('smoothing_eps') -%}
  {%- set horizons = [] -%}
  {%- for spec in specs %}{% do horizons.append(smoothing_horizon(spec[2], eps) | int) %}{% endfor -%}
  {%- set lags = horizons | max -%}
  {%- set source = 'with_series_columns' if series_columns else relation %}
  with
  {%- if series_columns %}
  with_series_columns as (
      select
          {{ relation }}.*
          {%- for name, expr in series_columns %},
          {{ expr }} as {{ name }}
          {%- endfor %}
      from {{ relation }}
  ),
  {%- endif %}
  lag_weights as (
      select
          timeframe,
          lag
          {%- for spec in specs %},
          case when lag < {{ horizons[loop.index0] }} then power({{ 1 - spec[2] }}::float8, lag) end as {{ spec[0] }}_weight
          {%- endfor %}
      from (
          select timeframe, generate_series(0, {{ lags - 1 }}) as lag
          from (select unnest(array[{% for tf in bar_timeframes() %}'{{ tf }}'{{ ', ' if not loop.last }}{% endfor %}]) as timeframe) as timeframes
      ) as lags
  ),
  seeded as (
      select
          symbol, timeframe, seq
          {%- for spec in specs %},
          {{ seeded_input(spec, 'seq') }} as {{ spec[0] }}_seeded
          {%- endfor %}
      from {{ relation }}
  ),
  fanned_out as (
      -- bar s contributes r^j c_s x_s to bar s + j
      select
          seeded.symbol,
          seeded.timeframe,
          seeded.seq + lag_weights.lag as seq
          {%- for spec in specs %},
          sum(lag_weights.{{ spec[0] }}_weight * seeded.{{ spec[0] }}_seeded) as {{ spec[0] }}
          {%- endfor %}
          {%- for name, a, b in differences %},
          -- term by term: no cancellation between two large sums
          -- (a weight is NULL past its smoother's cut: that side adds nothing)
          sum(coalesce(lag_weights.{{ a }}_weight * seeded.{{ a }}_seeded, 0)
              - coalesce(lag_weights.{{ b }}_weight * seeded.{{ b }}_seeded, 0)) as {{ name }}
          {%- endfor %}
      from seeded
      inner join lag_weights on lag_weights.timeframe = seeded.timeframe
      group by seeded.symbol, seeded.timeframe, seeded.seq + lag_weights.lag
  )
  select
      {% for column in keep + (series_columns | map(attribute=0) | list) %}{{ source }}.{{ column }}{{ ',' if not loop.last }}{% endfor %}
      {%- for name, expr, alpha, n, skip in specs %},
      case when {{ source }}.seq - {{ skip }} >= {{ n }} then fanned_out.{{ name }} end as {{ name }}
      {%- endfor %}
      {%- for name, a, b in differences %},
      fanned_out.{{ name }}
      {%- endfor %}
  from {{ source }}
  inner join fanned_out
      on fanned_out.symbol = {{ source }}.symbol
      and fanned_out.timeframe = {{ source }}.timeframe
      and fanned_out.seq = {{ source }}.seq
{%- endmacro %}

{% macro create_udfs() %}
  {{ return(adapter.dispatch('create_udfs', 'tradeflow')()) }}
{% endmacro %}

{% macro postgres__create_udfs() %}
  create schema if not exists {{ target.schema }};
  {#- The full_pass form's carry across blocks: C_b = x + ratio * C_{b-1}. Strict with
      no initial state: rows inside a block pass NULL and are skipped without a call
      (it runs once per block, a day of bars), and the first block end starts the state. #}
  create or replace function {{ target.schema }}.tf_carry_step(state float8, x float8, ratio float8)
  returns float8 language sql immutable strict parallel safe as $fn$
    select x + ratio * state
  $fn$;
  create or replace aggregate {{ target.schema }}.tf_carry(float8, float8) (
    sfunc = {{ target.schema }}.tf_carry_step,
    stype = float8
  );
{% endmacro %}

{% macro risingwave__create_udfs() %}
  {#- The lag_join form needs no user-defined function. #}
  select 1
{% endmacro %}

{% macro materialize__create_udfs() %}
  select 1
{% endmacro %}
