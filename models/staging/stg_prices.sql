-- One row per (symbol, ts): the first-received copy wins, so a re-sent bar
-- changes nothing downstream. Prices become float8 for indicator math;
-- price_1m_history keeps the exact values as received.
with source as (
    select * from {{ source('raw', 'price_1m_history') }}
    where {{ within_retention('ts') }}
),

deduplicated as (
    select distinct on (symbol, ts)
        symbol, ts, open, high, low, close, volume
    from source
    order by symbol, ts, received_at, batch_id
)

select
    symbol,
    ts as bar_ts,
    open::float8 as open,
    high::float8 as high,
    low::float8 as low,
    close::float8 as close,
    volume::float8 as volume
from deduplicated
