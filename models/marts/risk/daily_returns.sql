-- Rolling daily returns per symbol: the newest risk_window_days returns of
-- each symbol, day_rank 1 being its newest day. A day's close is the last 1m
-- close of the UTC day (first-received copy); today's row moves with each
-- bar until the day ends. return = close / previous day's close - 1, the
-- previous day being the symbol's previous day with a bar (weekends and
-- holidays are skipped, not zero). Work per new bar: the day's top-1 and the
-- symbol's bounded top-(N+1); state: one close per (symbol, day) within
-- risk_retention (docs/risk.md).
{% set window = var('risk_window_days') | int %}

with bars as (
    select
        symbol,
        ts,
        close,
        received_at,
        batch_id,
        date_trunc('day', ts at time zone 'UTC') as trading_day
    from {{ source('raw', 'price_1m_history') }}
    where {{ risk_bars_filter('ts') }}
),

daily_closes as (
    select distinct on (symbol, trading_day) symbol, trading_day, close
    from bars
    order by symbol, trading_day, ts desc, received_at, batch_id
),

newest as (
    {{ first_k_per_key('daily_closes', 'symbol', 'trading_day desc', window + 1, ['symbol', 'trading_day', 'close']) }}
),

numbered as (
    select symbol, trading_day, close, row_number() over (partition by symbol order by trading_day desc) as day_rank
    from newest
)

select
    today.symbol,
    today.trading_day,
    today.day_rank,
    today.close,
    prior_day.trading_day as prev_day,
    prior_day.close as prev_close,
    cast(today.close as float8) / cast(prior_day.close as float8) - 1.0 as daily_return
from numbered as today
inner join numbered as prior_day
    on prior_day.symbol = today.symbol
    and prior_day.day_rank = today.day_rank + 1
