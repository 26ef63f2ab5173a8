-- Latest state of every order. Events stamped at the same instant are ordered
-- by the lifecycle (NEW < ACK < PARTIAL < terminal), then by filled quantity.
select distinct on (client_order_id) *
from {{ source('raw', 'order_events') }}
order by
    client_order_id,
    event_ts desc,
    case status when 'NEW' then 0 when 'ACK' then 1 when 'PARTIAL' then 2 else 3 end desc,
    filled_qty desc
