-- One row per (symbol, ts): the first-received copy wins, so a re-sent bar
-- changes nothing downstream. Prices stay NUMERIC (exact as received):
-- moving sums over NUMERIC are exact and, on PostgreSQL, slide in O(1).
with source as (
    {{ price_rows() }}
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
    open,
    high,
    low,
    close,
    volume
from deduplicated
