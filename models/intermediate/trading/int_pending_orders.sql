-- Accepted orders not yet filled or finished: what a reservation holds. The
-- reservation TTL is applied by the gate with its own clock (wall clock live,
-- the replay clock in backtests), so this view carries no time filter.
with accepted as (
    select * from {{ source('raw', 'trade_decisions') }}
    where outcome = 'ACCEPTED'
),

filled as (
    select order_id, sum(fill_qty) as filled_qty
    from {{ ref('stg_execs') }}
    group by order_id
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
    policy.reservation_ttl_seconds
from accepted
inner join {{ ref('stg_account_policy') }} as policy on policy.account_id = accepted.account_id
left join filled on filled.order_id = accepted.client_order_id
left join latest on latest.client_order_id = accepted.client_order_id
where filled.order_id is null
    and coalesce(latest.status, 'NEW') not in ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')
