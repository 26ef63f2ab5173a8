-- 1-minute bars plus 5m, 15m and 1h bars aggregated from them. A higher
-- timeframe bar is final once all its minutes are in, or once the symbol has
-- a bar after the bucket (sessions end and minutes go missing).
{% set timeframes = {'5m': 5, '15m': 15, '1h': 60} %}

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
    select
        bucketed.symbol,
        '{{ tf }}' as timeframe,
        bucketed.bar_ts,
        bucketed.open,
        bucketed.high,
        bucketed.low,
        bucketed.close,
        bucketed.volume,
        (bucketed.minutes_in_bar = {{ minutes }}
            or symbol_clock.last_bar_ts >= bucketed.bar_ts + interval '{{ minutes }} minutes') as final
    from bucketed_{{ minutes }} as bucketed
    inner join symbol_clock on symbol_clock.symbol = bucketed.symbol
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
