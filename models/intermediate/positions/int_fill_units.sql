-- Each fill as an interval of units on its side of the book: the k-th unit
-- bought is matched with the k-th unit sold (FIFO on both sides, shorts and
-- crossings included), so matching needs running sums, not recursion.
{% set key = 'account_id, strategy_id, symbol' %}
{% set fifo_order = 'exec_ts, order_id, fill_id' %}

with fills as (
    select * from {{ ref('stg_execs') }}
),

running as (
    select
        fills.*,
        row_number() over (partition by {{ key }} order by {{ fifo_order }}) as fill_seq,
        sum(case when side = 'BUY' then fill_qty else 0 end) over (
            partition by {{ key }} order by {{ fifo_order }}
            rows between unbounded preceding and current row) as bought_after,
        sum(case when side = 'SELL' then fill_qty else 0 end) over (
            partition by {{ key }} order by {{ fifo_order }}
            rows between unbounded preceding and current row) as sold_after
    from fills
)

select
    running.*,
    bought_after - case when side = 'BUY' then fill_qty else 0 end as bought_before,
    sold_after - case when side = 'SELL' then fill_qty else 0 end as sold_before,
    bought_after - sold_after - signed_qty as position_before,
    bought_after - sold_after as position_after,
    -- the interval of this fill's units on its own side
    case when side = 'BUY' then bought_after - fill_qty else sold_after - fill_qty end as unit_from,
    case when side = 'BUY' then bought_after else sold_after end as unit_to
from running
