-- Latest state of every order: its highest per-order seq (the adapter numbers
-- the events it records 1, 2, ...; the gate's NEW has none and counts as 0).
-- Rows written before seq existed fall back to the time, then the lifecycle
-- (NEW < ACK < PARTIAL < terminal), then the filled quantity.
select distinct on (client_order_id) *
from {{ source('raw', 'order_events') }}
order by
    client_order_id,
    coalesce(seq, 0) desc,
    event_ts desc,
    case status when 'NEW' then 0 when 'ACK' then 1 when 'PARTIAL' then 2 else 3 end desc,
    filled_qty desc
