-- Remaining quantity of each open lot. A lot is the opening part of a fill;
-- on a long key the open units are the bought units beyond the last one sold
-- (and the other way round on a short key). One pass over a key's fills:
-- whole-key totals are window aggregates, so a read filtered on a key
-- touches only that key's rows.
{% set key = 'account_id, strategy_id, symbol' %}
{% set whole_key %}over (partition by {{ key }} order by fill_seq
    rows between unbounded preceding and unbounded following){% endset %}

with units as (
    select * from {{ ref('int_fill_units') }}
),

with_totals as (
    select
        units.*,
        sum(case when side = 'BUY' then fill_qty else 0 end) {{ whole_key }} as bought_total,
        sum(case when side = 'SELL' then fill_qty else 0 end) {{ whole_key }} as sold_total,
        max(case when side = 'BUY' then exec_ts end) {{ whole_key }} as last_buy_ts,
        max(case when side = 'SELL' then exec_ts end) {{ whole_key }} as last_sell_ts,
        max(exec_ts) {{ whole_key }} as last_fill_ts
    from units
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
    qty_open,
    qty_rem,
    fill_price as avg_price,
    -- fee share of the remaining units, realized when they close
    qty_rem * fee / fill_qty as fee_rem,
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
