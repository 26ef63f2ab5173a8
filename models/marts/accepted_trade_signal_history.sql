-- Signals the gate accepted: routed to an account, sized, past pre-trade
-- risk, with the terms of the order it stands for (written with the decision).
-- The execution adapter's change feed follows it: on Materialize the feed
-- resumes AS OF its saved position, which needs the view's history kept
-- (dbt-materialize's retain_history; the other adapters ignore it).
{{ config(retain_history=var('feed_retain_history')) }}
with decisions as (
    select * from {{ source('raw', 'trade_decisions') }}
    where outcome = 'ACCEPTED'
),

new_orders as (
    select client_order_id, order_type, time_in_force, limit_price, stop_price
    from {{ source('raw', 'order_events') }}
    where status = 'NEW'
)

select
    decisions.decision_id,
    decisions.signal_id,
    decisions.account_id,
    decisions.strategy_id,
    decisions.symbol,
    decisions.action,
    decisions.qty,
    decisions.ref_price,
    decisions.client_order_id,
    new_orders.order_type,
    new_orders.time_in_force,
    new_orders.limit_price,
    new_orders.stop_price,
    decisions.signal_ts,
    decisions.decided_at as ts,
    'OK' as reason,
    decisions.inputs
from decisions
left join new_orders on new_orders.client_order_id = decisions.client_order_id
