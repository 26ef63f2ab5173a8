-- 1-minute bars plus the higher timeframes of bar_timeframes() aggregated from
-- them. A higher timeframe bar is final once all its minutes are in, or once
-- the symbol has a bar after the bucket (sessions end and minutes go missing).
-- The timeframes nest (each bucket a whole number of shorter ones, all aligned
-- to the same origin), so a longer bucket aggregates the shorter buckets.
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
{#- a bucket is aggregated from the buckets of the largest shorter timeframe that divides it
    (15m from 5m, 1h from 15m): each aggregation reads a fraction of the minutes -#}
{%- set ns = namespace(source='minute_bars', source_minutes=1) -%}
{%- for shorter in timeframes.values() if shorter < minutes and minutes % shorter == 0 and shorter > ns.source_minutes -%}
  {%- set ns.source, ns.source_minutes = 'bucketed_' ~ shorter, shorter -%}
{%- endfor %}
bucketed_{{ minutes }} as (
    select
        symbol,
        date_bin(interval '{{ minutes }} minutes', bar_ts, timestamptz '2000-01-01 00:00:00+00') as bar_ts,
        -- one order for both ends, so the embedded engine sorts each bucket's rows once
        (array_agg(open order by bar_ts))[1] as open,
        max(high) as high,
        min(low) as low,
        (array_agg(close order by bar_ts))[count(*)] as close,
        sum(volume) as volume,
        {{ 'count(*)' if ns.source_minutes == 1 else 'sum(minutes_in_bar)' }} as minutes_in_bar
    from {{ ns.source }}
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
