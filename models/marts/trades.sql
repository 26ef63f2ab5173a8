-- Round-trip trades: one row per closed position cycle of (account_id,
-- strategy_id, symbol), from flat to flat or up to a flip (the crossing fill's
-- closing part ends this trade, its opening part starts the next). Entry and
-- exit prices are the quantity-weighted averages of the opening and closing
-- fills; fees are every fee of the trade (a crossing fill's pro rata). Gross
-- P&L = exit notional - entry notional (short: the reverse), the same under
-- FIFO and average cost for a whole cycle. MAE / MFE: the worst and best price
-- the bars reached while the trade was open, as a fraction of the entry price
-- (from the bar the entry filled in to the bar the exit filled in).
--
-- Cost on a streaming engine: the aggregate is bounded per cycle; the bar
-- join touches the bars of the trade's symbol between entry and exit.
{% set key = 'account_id, strategy_id, symbol' %}

with cycles as (
    select * from {{ ref('int_position_cycles') }}
),

parts as (
    select {{ key }}, side, exec_ts, fill_price, cycle_no - starts_cycle as cycle_no, 'CLOSE' as kind,
        close_qty as qty, fee * close_qty / qty as fee
    from cycles
    where close_qty > 0
    union all
    select {{ key }}, side, exec_ts, fill_price, cycle_no, 'OPEN' as kind,
        qty - close_qty as qty, fee * (qty - close_qty) / qty as fee
    from cycles
    where qty > close_qty
),

cycle_totals as (
    select
        {{ key }},
        cycle_no,
        max(case when kind = 'OPEN' then side end) as entry_side,
        min(case when kind = 'OPEN' then exec_ts end) as entry_ts,
        max(case when kind = 'CLOSE' then exec_ts end) as exit_ts,
        sum(case when kind = 'OPEN' then qty else 0 end) as qty,
        sum(case when kind = 'CLOSE' then qty else 0 end) as closed_qty,
        sum(case when kind = 'OPEN' then qty * fill_price else 0 end) as entry_notional,
        sum(case when kind = 'CLOSE' then qty * fill_price else 0 end) as exit_notional,
        sum(fee) as fees
    from parts
    group by {{ key }}, cycle_no
),

closed as (
    select
        cycle_totals.*,
        case when entry_side = 'BUY' then 'LONG' else 'SHORT' end as side,
        entry_notional / qty as entry_price,
        exit_notional / closed_qty as exit_price,
        case when entry_side = 'BUY' then exit_notional - entry_notional
            else entry_notional - exit_notional end as realized_pnl_gross
    from cycle_totals
    where closed_qty > 0 and closed_qty = qty
),

excursions as (
    select
        closed.account_id, closed.strategy_id, closed.symbol, closed.cycle_no,
        min(bars.low) as low,
        max(bars.high) as high
    from closed
    inner join {{ ref('stg_prices') }} as bars
        on bars.symbol = closed.symbol
        and bars.bar_ts > closed.entry_ts - interval '1 minute'
        and bars.bar_ts < closed.exit_ts
    group by closed.account_id, closed.strategy_id, closed.symbol, closed.cycle_no
)

select
    closed.account_id || ':' || closed.strategy_id || ':' || closed.symbol || ':'
        || cast(closed.cycle_no as text) as trade_id,
    closed.account_id,
    closed.strategy_id,
    closed.symbol,
    closed.side,
    closed.entry_ts,
    closed.exit_ts,
    closed.exit_ts - closed.entry_ts as holding_time,
    closed.qty,
    closed.entry_price,
    closed.exit_price,
    closed.realized_pnl_gross,
    closed.fees,
    closed.realized_pnl_gross - closed.fees as realized_pnl,
    (closed.realized_pnl_gross - closed.fees) / closed.entry_notional as return_pct,
    case when closed.side = 'LONG' then excursions.low / closed.entry_price - 1
        else 1 - excursions.high / closed.entry_price end as mae_pct,
    case when closed.side = 'LONG' then excursions.high / closed.entry_price - 1
        else 1 - excursions.low / closed.entry_price end as mfe_pct
from closed
left join excursions
    on excursions.account_id = closed.account_id
    and excursions.strategy_id = closed.strategy_id
    and excursions.symbol = closed.symbol
    and excursions.cycle_no = closed.cycle_no
