{#
  Exponential smoothing carried from row to row: EMA (alpha = 2/(n+1)) and
  Wilder's smoothing (alpha = 1/n) for RSI and ATR, seeded like TA-Lib with the
  simple mean of the first n non-null inputs. One macro, one implementation
  per engine:

  * PostgreSQL: user-defined aggregate tf_smooth over a frame from UNBOUNDED
    PRECEDING. PostgreSQL advances such a frame incrementally (one transition
    per row), so the value is the exact recursion: identical to TA-Lib up to
    float rounding (~1e-15 relative).
  * RisingWave: JavaScript UDAF tf_smooth over a bounded frame of
    n + h rows, h = smallest h with (1-alpha)^h < smoothing_eps_risingwave.
    RisingWave recomputes a UDAF frame per row, so the frame must be bounded;
    dropping older rows changes the value by at most (1-alpha)^h times the
    input range (1e-12 by default).
  * Materialize: no user-defined functions. Closed form over the last h rows
    (LAG expansion): sum_{j<h} alpha (1-alpha)^j x[t-j] + (1-alpha)^h x[t-h],
    h from smoothing_eps_materialize (1e-6 by default). Error at most
    (1-alpha)^h times the input range; NULL until h+1 rows exist (no seed).
#}

{% macro create_udfs() %}
  {{ return(adapter.dispatch('create_udfs', 'tradeflow')()) }}
{% endmacro %}

{% macro postgres__create_udfs() %}
  create schema if not exists {{ target.schema }};
  create or replace function {{ target.schema }}.tf_smooth_step(
      state float8[], x float8, alpha float8, n int)
  returns float8[] language plpgsql immutable strict parallel safe as $fn$
  begin
    -- state = {rows seen, sum of the seed rows, smoothed value}
    if state[1] < n then
      state[1] := state[1] + 1;
      state[2] := state[2] + x;
      if state[1] = n then
        state[3] := state[2] / n;
      end if;
      return state;
    end if;
    state[3] := state[3] + alpha * (x - state[3]);
    return state;
  end
  $fn$;
  create or replace function {{ target.schema }}.tf_smooth_final(state float8[])
  returns float8 language sql immutable strict parallel safe as $fn$ select state[3] $fn$;
  create or replace aggregate {{ target.schema }}.tf_smooth(float8, float8, int) (
    sfunc = {{ target.schema }}.tf_smooth_step,
    stype = float8[],
    finalfunc = {{ target.schema }}.tf_smooth_final,
    initcond = '{0,0,NULL}'
  );
{% endmacro %}

{% macro risingwave__create_udfs() %}
  create aggregate if not exists tf_smooth(float8, float8, int) returns float8 language javascript as $fn$
    export function create_state() {
      return { seen: 0, sum: 0.0, value: null };
    }
    export function accumulate(state, x, alpha, n) {
      if (x === null || x === undefined) return state;  // like a STRICT transition
      if (state.seen < n) {
        state.seen += 1;
        state.sum += x;
        if (state.seen === n) state.value = state.sum / n;
        return state;
      }
      state.value = state.value + alpha * (x - state.value);
      return state;
    }
    export function finish(state) {
      return state.value;
    }
  $fn$;
{% endmacro %}

{% macro materialize__create_udfs() %}
  {#- Materialize has no user-defined functions; see materialize__smooth. #}
  select 1
{% endmacro %}

{# Number of rows after which the weight left on older rows drops below eps. #}
{% macro smoothing_horizon(alpha, eps) %}
  {% set ns = namespace(weight=1.0, rows=0) %}
  {% for _ in range(100000) if ns.weight >= eps %}
    {% set ns.weight = ns.weight * (1 - alpha) %}
    {% set ns.rows = ns.rows + 1 %}
  {% endfor %}
  {{ return(ns.rows) }}
{% endmacro %}

{% macro ema(expr, n, partition_by, order_by) -%}
  {{ smooth(expr, 2.0 / (n + 1), n, partition_by, order_by) }}
{%- endmacro %}

{% macro wilder(expr, n, partition_by, order_by) -%}
  {{ smooth(expr, 1.0 / n, n, partition_by, order_by) }}
{%- endmacro %}

{% macro smooth(expr, alpha, seed_rows, partition_by, order_by) %}
  {{ return(adapter.dispatch('smooth', 'tradeflow')(expr, alpha, seed_rows, partition_by, order_by)) }}
{% endmacro %}

{% macro postgres__smooth(expr, alpha, seed_rows, partition_by, order_by) -%}
  {{ target.schema }}.tf_smooth(({{ expr }})::float8, {{ alpha }}, {{ seed_rows }}) over (
    partition by {{ partition_by }} order by {{ order_by }}
    rows between unbounded preceding and current row)
{%- endmacro %}

{% macro risingwave__smooth(expr, alpha, seed_rows, partition_by, order_by) -%}
  {%- set frame_rows = seed_rows + smoothing_horizon(alpha, var('smoothing_eps_risingwave')) -%}
  tf_smooth(({{ expr }})::float8, {{ alpha }}::float8, {{ seed_rows }}) over (
    partition by {{ partition_by }} order by {{ order_by }}
    rows between {{ frame_rows }} preceding and current row)
{%- endmacro %}

{% macro materialize__smooth(expr, alpha, seed_rows, partition_by, order_by) -%}
  {%- set horizon = smoothing_horizon(alpha, var('smoothing_eps_materialize')) -%}
  {%- set over -%}over (partition by {{ partition_by }} order by {{ order_by }}){%- endset -%}
  (
    {{ alpha }} * ({{ expr }})::float8
  {%- for j in range(1, horizon) %}
    + {{ alpha * (1 - alpha) ** j }} * lag(({{ expr }})::float8, {{ j }}) {{ over }}
  {%- endfor %}
    + {{ (1 - alpha) ** horizon }} * lag(({{ expr }})::float8, {{ horizon }}) {{ over }}
  )
{%- endmacro %}
