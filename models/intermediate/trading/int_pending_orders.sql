-- Accepted orders still working: what a reservation holds. Every order whose
-- latest status is not terminal (NEW, ACK, PARTIAL, or no event yet) reserves
-- its unfilled remainder (qty - the sum of its fills), whatever its age and
-- whether or not it has fills, so a PARTIAL SELL keeps reserving what it may
-- still sell. acknowledged: the broker has the order (an ACK or PARTIAL event,
-- or a fill, was seen). The gate applies the reservation TTL with its own
-- clock (wall clock live, the replay clock in backtests), and only to orders
-- never acknowledged; so this view carries no time filter.
with accepted as (
    select * from {{ source('raw', 'trade_decisions') }}
    where outcome = 'ACCEPTED'
),

filled as (
    select order_id, sum(fill_qty) as filled_qty
    from {{ ref('stg_execs') }}
    group by order_id
),

acknowledgements as (
    select client_order_id, max(case when status in ('ACK', 'PARTIAL') then 1 else 0 end) as acked
    from {{ source('raw', 'order_events') }}
    group by client_order_id
),

latest as (
    select * from {{ ref('orders') }}
)

select
    accepted.account_id,
    accepted.strategy_id,
    accepted.symbol,
    accepted.action,
    accepted.client_order_id,
    accepted.qty - coalesce(filled.filled_qty, 0) as open_qty,
    accepted.ref_price,
    accepted.decided_at,
    policy.reservation_ttl_seconds,
    coalesce(latest.status, 'NEW') as status,
    coalesce(acknowledgements.acked, 0) = 1 or filled.order_id is not null as acknowledged
from accepted
inner join {{ ref('stg_account_policy') }} as policy on policy.account_id = accepted.account_id
left join filled on filled.order_id = accepted.client_order_id
left join acknowledgements on acknowledgements.client_order_id = accepted.client_order_id
left join latest on latest.client_order_id = accepted.client_order_id
where coalesce(latest.status, 'NEW') not in ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')
    and accepted.qty - coalesce(filled.filled_qty, 0) > 0
