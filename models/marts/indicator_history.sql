-- Indicators per (symbol, timeframe, bar_ts), TA-Lib definitions:
-- SMA 5/10/20/21/50/200, EMA 12/26, MACD (12, 26, 9), RSI 14 (Wilder),
-- Bollinger (20, 2, population stddev), ATR 14 (Wilder), session VWAP (UTC day).
-- A value is NULL until its warm-up is complete. The last bar of a higher
-- timeframe may be provisional (final = false).
{% set series = 'symbol, timeframe' %}
{% set by_time = 'bar_ts' %}
{% set sma_periods = [5, 10, 20, 21, 50, 200] %}

with bars as (
    select * from {{ ref('int_bars_multi_timeframe') }}
),

changes as (
    select
        bars.*,
        row_number() over (partition by {{ series }} order by {{ by_time }}) as bar_number,
        lag(close, 1) over (partition by {{ series }} order by {{ by_time }}) as prev_close
    from bars
),

moves as (
    -- NULL on a series' first bar, so the smoothing seeds skip it as TA-Lib does
    select
        changes.*,
        case when prev_close is not null then greatest(close - prev_close, 0) end as gain,
        case when prev_close is not null then greatest(prev_close - close, 0) end as loss,
        case when prev_close is not null
            then greatest(high, prev_close) - least(low, prev_close) end as true_range
    from changes
),

smoothed as (
    select
        moves.*,
        {% for n in sma_periods %}
        case when bar_number >= {{ n }} then (avg(close) over (
            partition by {{ series }} order by {{ by_time }}
            rows between {{ n - 1 }} preceding and current row))::float8 end as sma_{{ n }},
        {% endfor %}
        case when bar_number >= 20 then (stddev_pop(close) over (
            partition by {{ series }} order by {{ by_time }}
            rows between 19 preceding and current row))::float8 end as stddev_20,
        {{ smoothed_columns([
            ema_spec('ema_12', 'close', 12),
            ema_spec('ema_26', 'close', 26),
            wilder_spec('avg_gain_14', 'gain', 14),
            wilder_spec('avg_loss_14', 'loss', 14),
            wilder_spec('atr_14', 'true_range', 14),
        ], series, by_time) }},
        sum((high + low + close) / 3 * volume) over (
            partition by symbol, timeframe, date_trunc('day', bar_ts) order by {{ by_time }}
            rows between unbounded preceding and current row) as session_pv,
        sum(volume) over (
            partition by symbol, timeframe, date_trunc('day', bar_ts) order by {{ by_time }}
            rows between unbounded preceding and current row) as session_volume
    from moves
),

macd as (
    select
        smoothed.*,
        -- TA-Lib's MACD only starts once the slow EMA exists
        case when bar_number >= 26 then ema_12 - ema_26 end as macd
    from smoothed
),

macd_signal as (
    select
        macd.*,
        {{ smoothed_columns([ema_spec('macd_signal', 'macd', 9)], series, by_time) }}
    from macd
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
    case when session_volume > 0 then (session_pv / session_volume)::float8 end as vwap,
    {{ var('indicator_version') }} as indicator_version
from macd_signal
