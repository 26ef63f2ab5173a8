-- Unrealized P&L per open key: (mark - avg_price) * net_qty, with the mark's
-- timestamp so a stale price is visible. avg_price follows pnl_method. The
-- mark is the last close at or before the read's as_of; a symbol without one
-- yet marks at avg_price (no unrealized P&L, no lost value).
{% set method = pnl_method() %}
{% set avg_price = 'average_cost.avg_price_after' if method == 'average_cost' else 'positions.avg_price' %}

with positions as (
    select * from {{ ref('open_positions_rollup') }}
),

{% if method == 'average_cost' %}
average_cost as (
    select distinct on (account_id, strategy_id, symbol)
        account_id, strategy_id, symbol, avg_price_after
    from {{ ref('int_average_cost_parts') }}
    order by account_id, strategy_id, symbol, fill_seq desc, part_no desc
),
{% endif %}

marks as (
    {{ marks('positions') }}
)

select
    positions.account_id,
    positions.strategy_id,
    positions.symbol,
    positions.side,
    positions.net_qty,
    {{ avg_price }} as avg_price,
    -- until its symbol has a bar, a position is marked at its average price (mark_ts null)
    coalesce(marks.mark, {{ avg_price }}) as current_price,
    marks.mark_ts,
    (coalesce(marks.mark, {{ avg_price }}) - {{ avg_price }}) * positions.net_qty as unrealized_pnl,
    '{{ method }}' as method
from positions
left join marks on marks.symbol = positions.symbol
{% if method == 'average_cost' %}
inner join average_cost
    on average_cost.account_id = positions.account_id
    and average_cost.strategy_id = positions.strategy_id
    and average_cost.symbol = positions.symbol
{% endif %}
