-- The current reference data of every instrument: the newest loaded row per
-- symbol wins (instruments is append-only; a reload is a new version).
select distinct on (symbol)
    symbol,
    asset_class,
    sector,
    industry,
    currency,
    lot_size,
    tick_size,
    calendar,
    shortable,
    margin_class,
    received_at as loaded_at
from {{ source('raw', 'instruments') }}
order by symbol, received_at desc, batch_id desc
