-- Remaining quantity of each open lot. A lot is the opening part of a fill;
-- on a long key the open units are the bought units beyond the last one sold
-- (and the other way round on a short key). Whole-key totals are a GROUP BY
-- joined back on the key, not whole-partition windows: a streaming engine
-- updates a key's totals per fill instead of re-running its window, and a read
-- filtered on a key touches only that key's rows (the filter reaches both sides).
{% set key = ['account_id', 'strategy_id', 'symbol'] %}

with units as (
    select * from {{ ref('int_fill_units') }}
),

key_totals as (
    select
        {{ key | join(', ') }},
        sum(case when side = 'BUY' then fill_qty else 0 end) as bought_total,
        sum(case when side = 'SELL' then fill_qty else 0 end) as sold_total,
        max(case when side = 'BUY' then exec_ts end) as last_buy_ts,
        max(case when side = 'SELL' then exec_ts end) as last_sell_ts,
        max(exec_ts) as last_fill_ts
    from units
    group by {{ key | join(', ') }}
),

with_totals as (
    select
        units.*,
        key_totals.bought_total,
        key_totals.sold_total,
        key_totals.last_buy_ts,
        key_totals.last_sell_ts,
        key_totals.last_fill_ts
    from units
    inner join key_totals
        on {% for column in key %}key_totals.{{ column }} = units.{{ column }}{{ ' and ' if not loop.last }}{% endfor %}
),

lots as (
    select
        with_totals.*,
        -- the opening part: units beyond what the other side had done by then
        unit_to - greatest(unit_from, case when side = 'BUY' then sold_after else bought_after end) as qty_open,
        unit_to - greatest(unit_from, case when side = 'BUY' then sold_total else bought_total end) as qty_rem
    from with_totals
)

select
    account_id,
    strategy_id,
    symbol,
    order_id || ':' || fill_id as lot_id,
    case when side = 'BUY' then 'LONG' else 'SHORT' end as side,
    {{ quantity('qty_open') }} as qty_open,
    {{ quantity('qty_rem') }} as qty_rem,
    {{ price('fill_price') }} as avg_price,
    -- fee share of the remaining units, realized when they close
    {{ money('qty_rem * fee / fill_qty') }} as fee_rem,
    exec_ts as ts_open,
    -- only the oldest open lot can be partly closed, and then by the latest closing fill
    case
        when qty_rem = qty_open then exec_ts
        when side = 'BUY' then last_sell_ts
        else last_buy_ts
    end as ts_updated,
    last_fill_ts
from lots
where qty_rem > 0
