-- Indicators per (symbol, timeframe, bar_ts), TA-Lib definitions:
-- SMA 5/10/20/21/50/200, EMA 12/26, MACD (12, 26, 9), RSI 14 (Wilder),
-- Bollinger (20, 2, population stddev), ATR 14 (Wilder), session VWAP (UTC day).
-- A value is NULL until its warm-up is complete. The last bar of a higher
-- timeframe may be provisional (final = false).
-- Arithmetic in float8 like TA-Lib's (prices stay NUMERIC in the output).
-- EMA / Wilder / MACD signal: smooth() (udfs/smoothing.sql), moving means:
-- macros/indicators.sql; each has one form per engine (indicator_form()).
-- Every series window orders by (utc_day, bar_ts), the order of the session
-- window (the UTC day, also the smoothing block) too, so the embedded engine
-- sorts the bars once for all of them.
{% set series = 'partition by symbol, timeframe order by utc_day, bar_ts' %}
{% set sma_periods = [5, 10, 20, 21, 50, 200] %}
{% set bar_columns = ['symbol', 'timeframe', 'bar_ts', 'final', 'open', 'high', 'low', 'close', 'volume',
                      'utc_day', 'seq'] %}
{% set smoothers = [
    ema_spec('ema_12', 'close_f', 12),
    ema_spec('ema_26', 'close_f', 26),
    wilder_spec('avg_gain_14', 'gain', 14, leading_nulls=1),
    wilder_spec('avg_loss_14', 'loss', 14, leading_nulls=1),
    wilder_spec('atr_14', 'true_range', 14, leading_nulls=1),
] %}
{% set signal_smoother = ema_spec('macd_signal', 'macd', 9, leading_nulls=25) %}
{% do bar_columns.extend(smoothing_block_column_names(smoothers + [signal_smoother])) %}
{% set sma_columns = [] %}{% for n in sma_periods %}{% do sma_columns.append('sma_' ~ n) %}{% endfor %}
{#- the window sums (or means) of the SMAs and the Bollinger deviation, computed with the smoothers -#}
{% set moving_windows = moving_window_columns('close', 'close_f', sma_periods, [20], series) %}

with bars as (
    select
        bars.*,
        close::float8 as close_f,
        -- the session is the UTC day whatever the reader's TimeZone (date_bin counts from a UTC origin)
        date_bin(interval '1 day', bar_ts, timestamptz '2000-01-01 00:00:00+00') as utc_day
    from {{ ref('int_bars_multi_timeframe') }} as bars
),

numbered as (
    -- seq: the bar's number in its series (1, 2, ...), the key of the lag joins
    select
        bars.*,
        row_number() over series as seq,
        lag(close_f, 1) over series as prev_close,
        -- / 3 once per read, not per bar: NUMERIC division is the costly operation
        sum((high + low + close) * volume) over session as session_pv3,
        sum(volume) over session as session_volume
        {{ moving_sum_inputs('close', series) }}
        {{ smoothing_block_columns('series', 'session', smoothers + [signal_smoother]) }}
    from bars
    -- one frame for every series window (row_number and lag ignore it): one pass over the sorted bars
    window series as ({{ series }} rows between unbounded preceding and current row),
        session as (partition by symbol, timeframe, utc_day order by bar_ts rows between unbounded preceding and current row)
),

windowed as (
    select
        {% for column in bar_columns + moving_sum_input_names() %}{{ column }}, {% endfor %}close_f,
        (session_pv3 / nullif(3 * session_volume, 0))::float8 as vwap,
        -- NULL on a series' first bar, so the smoothing seeds skip it as TA-Lib does
        case when prev_close is not null then greatest(close_f - prev_close, 0) end as gain,
        case when prev_close is not null then greatest(prev_close - close_f, 0) end as loss,
        case when prev_close is not null
            then greatest(high::float8, prev_close) - least(low::float8, prev_close) end as true_range
    from numbered
),

smoothed as (
    {{ smooth('windowed', smoothers, keep=bar_columns + ['vwap'], differences=[('ema_12_minus_26', 'ema_12', 'ema_26')],
              series_columns=moving_windows) }}
),

macd as (
    select
        smoothed.*,
        {% for n in sma_periods %}
        case when seq >= {{ n }} then {{ moving_mean(n) }} end as sma_{{ n }},
        {% endfor %}
        case when seq >= 20 then {{ moving_stddev_pop(20) }} end as stddev_20,
        -- TA-Lib's MACD only starts once the slow EMA exists
        case when seq >= 26 then ema_12_minus_26 end as macd
    from smoothed
),

macd_signal as (
    {{ smooth('macd', [signal_smoother],
        keep=bar_columns + sma_columns + ['stddev_20', 'vwap', 'ema_12', 'ema_26', 'avg_gain_14', 'avg_loss_14', 'atr_14', 'macd']) }}
)

select
    symbol,
    timeframe,
    bar_ts,
    final,
    open,
    high,
    low,
    close,
    volume,
    {% for n in sma_periods %}
    sma_{{ n }},
    {% endfor %}
    ema_12,
    ema_26,
    macd,
    macd_signal,
    macd - macd_signal as macd_hist,
    case
        when avg_gain_14 + avg_loss_14 > 0 then 100 * avg_gain_14 / (avg_gain_14 + avg_loss_14)
        when avg_gain_14 is not null then 0
    end as rsi_14,
    sma_20 as bb_middle,
    sma_20 + 2 * stddev_20 as bb_upper,
    sma_20 - 2 * stddev_20 as bb_lower,
    atr_14,
    vwap,
    {{ var('indicator_version') }} as indicator_version
from macd_signal
