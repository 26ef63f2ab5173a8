-- Every order event, in order per client_order_id.
select * from {{ source('raw', 'order_events') }}
