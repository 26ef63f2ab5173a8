-- One row per matched segment: the units a buy fill and a sell fill share.
-- Fee convention: a fill's fee is spread over its units pro rata; a segment
-- carries the share of both fills' fees for its units, so a crossing fill's
-- fee is split between the part it closes (realized now) and the part it
-- opens (realized when that lot closes).
{% set key = ['account_id', 'strategy_id', 'symbol'] %}

with units as (
    select * from {{ ref('int_fill_units') }}
),

buys as (
    select * from units where side = 'BUY'
),

sells as (
    select * from units where side = 'SELL'
),

segments as (
    select
        buys.account_id,
        buys.strategy_id,
        buys.symbol,
        buys.order_id as buy_order_id,
        buys.fill_id as buy_fill_id,
        sells.order_id as sell_order_id,
        sells.fill_id as sell_fill_id,
        least(buys.unit_to, sells.unit_to) - greatest(buys.unit_from, sells.unit_from) as matched_qty,
        buys.fill_price as buy_price,
        sells.fill_price as sell_price,
        buys.fee / buys.fill_qty as buy_fee_per_unit,
        sells.fee / sells.fill_qty as sell_fee_per_unit,
        case when buys.fill_seq < sells.fill_seq then 'LONG' else 'SHORT' end as closed_side,
        case when buys.fill_seq < sells.fill_seq then sells.exec_ts else buys.exec_ts end as match_ts
    from buys
    inner join sells
        on {% for col in key %}sells.{{ col }} = buys.{{ col }} and {% endfor %}
        buys.unit_from < sells.unit_to
        and sells.unit_from < buys.unit_to
)

select
    buy_order_id || ':' || buy_fill_id || '|' || sell_order_id || ':' || sell_fill_id as match_id,
    account_id,
    strategy_id,
    symbol,
    closed_side,
    buy_order_id,
    buy_fill_id,
    sell_order_id,
    sell_fill_id,
    matched_qty,
    buy_price,
    sell_price,
    (sell_price - buy_price) * matched_qty as realized_pnl_gross,
    matched_qty * (buy_fee_per_unit + sell_fee_per_unit) as fee_share,
    (sell_price - buy_price) * matched_qty - matched_qty * (buy_fee_per_unit + sell_fee_per_unit) as realized_pnl,
    match_ts
from segments
