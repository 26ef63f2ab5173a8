{#
  Exponential smoothing carried from row to row: EMA (alpha = 2/(n+1)) and
  Wilder's smoothing (alpha = 1/n) for RSI and ATR, seeded like TA-Lib with the
  simple mean of the first n non-null inputs. One macro, one implementation
  per engine:

  * PostgreSQL: user-defined aggregate tf_smooth over a frame from UNBOUNDED
    PRECEDING, smoothing all inputs of one select in a single call.
    PostgreSQL advances such a frame incrementally (one transition per row),
    so the value is the exact recursion: identical to TA-Lib up to float
    rounding (~1e-15 relative).
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
  {#- One call smooths several inputs at once: PL/pgSQL's per-call overhead
      (~1.5 us) dominates the arithmetic, so five smoothers in one call cost
      about a third of five calls. PostgreSQL computes identical window calls
      once, so each output column subscripts the same call. #}
  create or replace function {{ target.schema }}.tf_smooth_step(
      state float8[], x float8[], alpha float8[], n int[])
  returns float8[] language plpgsql immutable parallel safe as $fn$
  declare
    i int;
    slot int;
  begin
    -- per input i: state[3i-2] rows seen, state[3i-1] sum of the seed rows, state[3i] value
    if cardinality(state) = 0 then
      state := array_fill(0::float8, array[3 * cardinality(x)]);
      for i in 1 .. cardinality(x) loop
        state[3 * i] := null;
      end loop;
    end if;
    for i in 1 .. cardinality(x) loop
      continue when x[i] is null;  -- NULL inputs are skipped, like a STRICT aggregate
      slot := 3 * i - 2;
      if state[slot] < n[i] then
        state[slot] := state[slot] + 1;
        state[slot + 1] := state[slot + 1] + x[i];
        if state[slot] = n[i] then
          state[slot + 2] := state[slot + 1] / n[i];
        end if;
      else
        state[slot + 2] := state[slot + 2] + alpha[i] * (x[i] - state[slot + 2]);
      end if;
    end loop;
    return state;
  end
  $fn$;
  create or replace aggregate {{ target.schema }}.tf_smooth(float8[], float8[], int[]) (
    sfunc = {{ target.schema }}.tf_smooth_step,
    stype = float8[],
    initcond = '{}'
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

{#
  Select-list items for several smoothed inputs over one series.
  specs: list of (output_name, input_expr, alpha, seed_rows); use ema_spec /
  wilder_spec to build them.
#}
{% macro ema_spec(name, expr, n) %}{{ return((name, expr, 2.0 / (n + 1), n)) }}{% endmacro %}
{% macro wilder_spec(name, expr, n) %}{{ return((name, expr, 1.0 / n, n)) }}{% endmacro %}

{% macro smoothed_columns(specs, partition_by, order_by) %}
  {{ return(adapter.dispatch('smoothed_columns', 'tradeflow')(specs, partition_by, order_by)) }}
{% endmacro %}

{% macro postgres__smoothed_columns(specs, partition_by, order_by) -%}
  {%- set call -%}
  {{ target.schema }}.tf_smooth(
      array[{% for s in specs %}({{ s[1] }})::float8{{ ', ' if not loop.last }}{% endfor %}],
      array[{% for s in specs %}{{ s[2] }}{{ ', ' if not loop.last }}{% endfor %}]::float8[],
      array[{% for s in specs %}{{ s[3] }}{{ ', ' if not loop.last }}{% endfor %}]::int[]
    ) over (partition by {{ partition_by }} order by {{ order_by }}
            rows between unbounded preceding and current row)
  {%- endset -%}
  {%- for s in specs %}
  ({{ call }})[{{ 3 * loop.index }}] as {{ s[0] }}{{ ',' if not loop.last }}
  {%- endfor %}
{%- endmacro %}

{% macro risingwave__smoothed_columns(specs, partition_by, order_by) -%}
  {%- for name, expr, alpha, seed_rows in specs %}
  {%- set frame_rows = seed_rows + smoothing_horizon(alpha, var('smoothing_eps_risingwave')) %}
  tf_smooth(({{ expr }})::float8, {{ alpha }}::float8, {{ seed_rows }}) over (
    partition by {{ partition_by }} order by {{ order_by }}
    rows between {{ frame_rows }} preceding and current row) as {{ name }}{{ ',' if not loop.last }}
  {%- endfor %}
{%- endmacro %}

{% macro materialize__smoothed_columns(specs, partition_by, order_by) -%}
  {%- set over -%}over (partition by {{ partition_by }} order by {{ order_by }}){%- endset -%}
  {%- for name, expr, alpha, seed_rows in specs %}
  {%- set horizon = smoothing_horizon(alpha, var('smoothing_eps_materialize')) %}
  (
    {{ alpha }} * ({{ expr }})::float8
    {%- for j in range(1, horizon) %}
    + {{ alpha * (1 - alpha) ** j }} * lag(({{ expr }})::float8, {{ j }}) {{ over }}
    {%- endfor %}
    + {{ (1 - alpha) ** horizon }} * lag(({{ expr }})::float8, {{ horizon }}) {{ over }}
  ) as {{ name }}{{ ',' if not loop.last }}
  {%- endfor %}
{%- endmacro %}
