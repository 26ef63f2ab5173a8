-- One row per matched segment: the units a buy fill and a sell fill share.
-- Buy fills tile the bought units [0, bought) and sell fills the sold units,
-- so every segment starts where some fill's interval starts: walk those start
-- points in unit order, carrying the current buy and sell forward, instead of
-- joining every buy with every sell of a key.
--
-- Fee convention: a fill's fee is spread over its units pro rata; a segment
-- carries the share of both fills' fees for its units, so a crossing fill's
-- fee is split between the part it closes (realized now) and the part it
-- opens (realized when that lot closes).
{% set key = 'account_id, strategy_id, symbol' %}
{% set in_unit_order = 'order by unit_from, is_sell' %}
{% set carried = ['order_id', 'fill_id', 'fill_price', 'fee_per_unit', 'fill_seq', 'exec_ts', 'unit_to'] %}

with units as (
    select * from {{ ref('int_fill_units') }}
),

starts as (
    select
        account_id, strategy_id, symbol, unit_from,
        case when side = 'SELL' then 1 else 0 end as is_sell,
        {% for col in carried %}
        case when side = 'BUY' then {{ 'fee / fill_qty' if col == 'fee_per_unit' else col }} end as buy_{{ col }},
        case when side = 'SELL' then {{ 'fee / fill_qty' if col == 'fee_per_unit' else col }} end as sell_{{ col }}{{ ',' if not loop.last }}
        {% endfor %}
    from units
),

grouped as (
    -- each buy (sell) start opens a group that lasts until the next one
    select
        starts.*,
        count(buy_order_id) over (partition by {{ key }} {{ in_unit_order }}
            rows between unbounded preceding and current row) as buy_group,
        count(sell_order_id) over (partition by {{ key }} {{ in_unit_order }}
            rows between unbounded preceding and current row) as sell_group,
        lead(unit_from, 1) over (partition by {{ key }} {{ in_unit_order }}) as next_start
    from starts
),

carried as (
    select
        account_id, strategy_id, symbol, unit_from, next_start, buy_group, sell_group,
        {% for side in ['buy', 'sell'] %}
        {% for col in carried %}
        first_value({{ side }}_{{ col }}) over (partition by {{ key }}, {{ side }}_group {{ in_unit_order }}
            rows between unbounded preceding and current row) as {{ side }}_{{ col }}{{ ',' if not (loop.last and side == 'sell') }}
        {% endfor %}
        {% endfor %}
    from grouped
),

segments as (
    select
        carried.*,
        least(buy_unit_to, sell_unit_to) - unit_from as matched_qty
    from carried
    -- one segment per start point (a buy and a sell may start at the same unit)
    where buy_group > 0 and sell_group > 0
        and (next_start is null or next_start <> unit_from)
        and least(buy_unit_to, sell_unit_to) > unit_from
)

select
    buy_order_id || ':' || buy_fill_id || '|' || sell_order_id || ':' || sell_fill_id as match_id,
    account_id,
    strategy_id,
    symbol,
    case when buy_fill_seq < sell_fill_seq then 'LONG' else 'SHORT' end as closed_side,
    buy_order_id,
    buy_fill_id,
    sell_order_id,
    sell_fill_id,
    {{ quantity('matched_qty') }} as matched_qty,
    {{ price('buy_fill_price') }} as buy_price,
    {{ price('sell_fill_price') }} as sell_price,
    {{ money('(sell_fill_price - buy_fill_price) * matched_qty') }} as realized_pnl_gross,
    {{ money('matched_qty * (buy_fee_per_unit + sell_fee_per_unit)') }} as fee_share,
    {{ money('(sell_fill_price - buy_fill_price) * matched_qty - matched_qty * (buy_fee_per_unit + sell_fee_per_unit)') }}
        as realized_pnl,
    case when buy_fill_seq < sell_fill_seq then sell_exec_ts else buy_exec_ts end as match_ts
from segments
