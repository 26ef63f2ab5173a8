-- Each fill with its position cycle per (account_id, strategy_id, symbol): a
-- cycle runs from flat to flat, or up to a flip (the crossing fill closes one
-- and opens the next). close_qty is the part of the fill that reduces the
-- position; starts_cycle marks a fill that opens a cycle. Average-cost P&L
-- accumulates within a cycle; a closed cycle is a round-trip trade.
{% set key = 'account_id, strategy_id, symbol' %}

with units as (
    select * from {{ ref('int_fill_units') }}
),

flagged as (
    select
        units.*,
        abs(signed_qty) as qty,
        case when position_before <> 0 and (position_before > 0) <> (signed_qty > 0)
            then least(abs(signed_qty), abs(position_before)) else 0 end as close_qty,
        case when position_before = 0
                or (position_after <> 0 and (position_before > 0) <> (position_after > 0))
            then 1 else 0 end as starts_cycle
    from units
)

select
    flagged.*,
    sum(starts_cycle) over (partition by {{ key }} order by fill_seq
        rows between unbounded preceding and current row) as cycle_no
from flagged
