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
-- Cost: the aggregate is bounded per cycle; the excursions read the bars of
-- the trade's symbol between entry and exit (macros/trades.sql: an index range
-- scan per trade on the embedded engine, a band join on the streaming ones).
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
    {{ with_excursions('closed') }}
)

select
    trip.account_id || ':' || trip.strategy_id || ':' || trip.symbol || ':'
        || cast(trip.cycle_no as text) as trade_id,
    trip.account_id,
    trip.strategy_id,
    trip.symbol,
    trip.side,
    trip.entry_ts,
    trip.exit_ts,
    trip.exit_ts - trip.entry_ts as holding_time,
    trip.qty,
    trip.entry_price,
    trip.exit_price,
    trip.realized_pnl_gross,
    trip.fees,
    trip.realized_pnl_gross - trip.fees as realized_pnl,
    (trip.realized_pnl_gross - trip.fees) / trip.entry_notional as return_pct,
    case when trip.side = 'LONG' then trip.low / trip.entry_price - 1
        else 1 - trip.high / trip.entry_price end as mae_pct,
    case when trip.side = 'LONG' then trip.high / trip.entry_price - 1
        else 1 - trip.low / trip.entry_price end as mfe_pct
from excursions as trip
