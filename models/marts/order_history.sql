-- Every order event; per client_order_id, seq (NULL: the gate's NEW, first) gives
-- their order and event_ts never decreases along it.
select * from {{ source('raw', 'order_events') }}
