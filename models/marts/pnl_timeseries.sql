-- Equity per account at the close of every 1-minute bar of the symbols it
-- has traded, from its first fill on:
--   equity = initial capital + cash flows of the fills stamped before the
--            bar's close (fees subtracted)
--            + sum over traded symbols of position x the symbol's mark,
-- where a symbol's mark is its last close at or before that instant, so a
-- symbol with no bar at a minute keeps its last close. A position opened
-- before its symbol's first close ever is valued at cost (the fills' signed
-- notional) until that close.
--
-- Per (account, symbol) an event stream, in (at, kind) order: the last close
-- at or before the first fill (kind 0, sets the mark, no row of its own), every
-- bar closing after the first fill (kind 1), the fills of one instant (kind 2).
-- One pass of running sums over it gives the position, the mark (a running
-- sum of close steps) and the change of market value each event causes: a
-- close moves the position's value by position x close step, a fill adds its
-- units at the mark. One running sum per account of those changes plus the
-- cash changes gives equity at each close, with no re-scan of earlier rows.
with fill_events as (
    select
        account_id,
        symbol,
        exec_ts as at,
        sum(signed_qty) as qty_change,
        sum(signed_qty * fill_price) as cost_change,
        sum(fee) as fees
    from {{ ref('stg_execs') }}
    group by account_id, symbol, exec_ts
),

first_fills as (
    select account_id, symbol, min(exec_ts) as first_fill_ts
    from {{ ref('stg_execs') }}
    group by account_id, symbol
),

closes as (
    {{ traded_closes('first_fills') }}
),

events as (
    select account_id, symbol, bar_ts + interval '1 minute' as at,
        case when is_opening then 0 else 1 end as kind,
        close, close_step,
        cast(0 as numeric) as qty_change, cast(0 as numeric) as cost_change, cast(0 as numeric) as fees
    from closes
    union all
    select account_id, symbol, at, 2 as kind, cast(null as numeric) as close, cast(0 as numeric) as close_step,
        qty_change, cost_change, fees
    from fill_events
),

running as (
    select
        events.*,
        sum(qty_change) over (partition by account_id, symbol order by at, kind
            rows between unbounded preceding and current row) as position,
        sum(cost_change) over (partition by account_id, symbol order by at, kind
            rows between unbounded preceding and current row) as cost_to_date,
        sum(close_step) over (partition by account_id, symbol order by at, kind
            rows between unbounded preceding and current row) as mark,
        sum(case when kind < 2 then 1 else 0 end) over (partition by account_id, symbol order by at, kind
            rows between unbounded preceding and current row) as closes_seen
    from events
),

changes as (
    -- before the symbol's first close its units count at cost; the first
    -- close swaps that cost for position x close
    select
        account_id,
        at,
        kind,
        -cost_change - fees as cash_change,
        case
            when kind = 2 and closes_seen = 0 then cost_change
            when kind = 2 then qty_change * mark
            when closes_seen = 1 then position * close - cost_to_date
            else position * close_step
        end as value_change
    from running
    where kind > 0
),

instants as (
    -- every bar closing at one instant in one row; bars before the fills
    -- stamped at that instant (a fill at the close is not in that bar's equity)
    select account_id, at, kind, sum(cash_change) as cash_change, sum(value_change) as value_change
    from changes
    group by account_id, at, kind
),

totals as (
    select
        account_id,
        at,
        kind,
        sum(cash_change) over (partition by account_id order by at, kind
            rows between unbounded preceding and current row) as cash_delta,
        sum(value_change) over (partition by account_id order by at, kind
            rows between unbounded preceding and current row) as market_value
    from instants
)

select
    totals.account_id,
    totals.at - interval '1 minute' as bar_ts,
    {{ money('accounts.initial_capital + totals.cash_delta') }} as cash,
    {{ money('totals.market_value') }} as market_value,
    {{ money('accounts.initial_capital + totals.cash_delta + totals.market_value') }} as equity
from totals
inner join {{ ref('stg_accounts') }} as accounts on accounts.account_id = totals.account_id
where totals.kind = 1
