-- Unrealized P&L per open key: (mark - avg_price) * net_qty, with the mark's
-- timestamp so a stale price is visible. The mark is the symbol's last close
-- at or before the read's as_of (the same marks as pnl_timeseries; NULL before
-- the symbol's first close) or, with mark_source=last_fill, its latest fill
-- price. avg_price follows pnl_method (exact NUMERIC under fifo).
{% set method = pnl_method() %}

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
    {% if method == 'average_cost' %}{{ price('average_cost.avg_price_after') }}{% else %}positions.avg_price{% endif %}
        as avg_price,
    {{ price('marks.mark') }} as current_price,
    marks.mark_ts,
    {% if method == 'average_cost' -%}
    {{ money('(marks.mark - average_cost.avg_price_after) * positions.net_qty') }}
    {%- else -%}
    {# from the open lots' cost, not the rounded avg_price #}
    {{ money('marks.mark * positions.net_qty - positions.net_cost') }}
    {%- endif %} as unrealized_pnl,
    '{{ method }}' as method
from positions
left join marks on marks.symbol = positions.symbol
{% if method == 'average_cost' %}
inner join average_cost
    on average_cost.account_id = positions.account_id
    and average_cost.strategy_id = positions.strategy_id
    and average_cost.symbol = positions.symbol
{% endif %}
