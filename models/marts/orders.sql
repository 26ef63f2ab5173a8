-- Latest state of every order.
select distinct on (client_order_id) *
from {{ source('raw', 'order_events') }}
order by client_order_id, event_ts desc, filled_qty desc
