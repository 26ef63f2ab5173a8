-- 1-minute bars plus the higher timeframes of bar_timeframes() aggregated from
-- them. A higher timeframe bar is final once all its minutes are in, or once
-- the symbol has a bar after the bucket (sessions end and minutes go missing).
{% set timeframes = {} %}
{% for tf, minutes in bar_timeframes().items() if minutes > 1 %}{% do timeframes.update({tf: minutes}) %}{% endfor %}

with minute_bars as (
    select * from {{ ref('stg_prices') }}
),

symbol_clock as (
    select symbol, max(bar_ts) as last_bar_ts
    from minute_bars
    group by symbol
),

{% for tf, minutes in timeframes.items() %}
bucketed_{{ minutes }} as (
    select
        symbol,
        date_bin(interval '{{ minutes }} minutes', bar_ts, timestamptz '2000-01-01 00:00:00+00') as bar_ts,
        (array_agg(open order by bar_ts))[1] as open,
        max(high) as high,
        min(low) as low,
        (array_agg(close order by bar_ts desc))[1] as close,
        sum(volume) as volume,
        count(*) as minutes_in_bar
    from minute_bars
    group by 1, 2
),

bars_{{ minutes }} as (
    -- a bucket with all its minutes is final without looking further ...
    select symbol, '{{ tf }}' as timeframe, bar_ts, open, high, low, close, volume, true as final
    from bucketed_{{ minutes }}
    where minutes_in_bar = {{ minutes }}
    union all
    -- ... only the incomplete ones (the live bucket, session ends, gaps) are
    -- compared with the symbol's clock: a new minute re-evaluates those, not
    -- every bucket of the symbol
    select
        bucketed.symbol,
        '{{ tf }}' as timeframe,
        bucketed.bar_ts,
        bucketed.open,
        bucketed.high,
        bucketed.low,
        bucketed.close,
        bucketed.volume,
        symbol_clock.last_bar_ts >= bucketed.bar_ts + interval '{{ minutes }} minutes' as final
    from bucketed_{{ minutes }} as bucketed
    inner join symbol_clock on symbol_clock.symbol = bucketed.symbol
    where bucketed.minutes_in_bar < {{ minutes }}
),

{% endfor %}
all_bars as (
    select symbol, '1m' as timeframe, bar_ts, open, high, low, close, volume, true as final
    from minute_bars
{% for tf, minutes in timeframes.items() %}
    union all
    select symbol, timeframe, bar_ts, open, high, low, close, volume, final
    from bars_{{ minutes }}
{% endfor %}
)

select * from all_bars
