-- Equity per account at the close of every 1-minute bar of the symbols it
-- has traded, from its first fill on: cash as of the bar's close plus each
-- symbol's position marked at that bar's close. A symbol missing a bar at a
-- timestamp contributes nothing to that row.
{% set far_future = "timestamptz '9999-01-01 00:00:00+00'" %}

with fills as (
    select * from {{ ref('stg_execs') }}
),

position_changes as (
    select account_id, symbol, exec_ts, sum(signed_qty) as qty_change
    from fills
    group by account_id, symbol, exec_ts
),

positions as (
    -- position per (account, symbol), valid from one fill time to the next
    select
        account_id,
        symbol,
        exec_ts as valid_from,
        coalesce(lead(exec_ts, 1) over (partition by account_id, symbol order by exec_ts), {{ far_future }}) as valid_to,
        sum(qty_change) over (partition by account_id, symbol order by exec_ts
            rows between unbounded preceding and current row) as position
    from position_changes
),

cash_changes as (
    select account_id, exec_ts, sum(-signed_qty * fill_price - fee) as cash_change
    from fills
    group by account_id, exec_ts
),

held_bars as (
    {{ bars_while_held('positions') }}
),

marked as (
    select account_id, bar_ts, sum(position * close) as market_value
    from held_bars
    group by account_id, bar_ts
),

timeline as (
    -- bar closes and cash changes in one time order per account: a running sum
    -- gives the cash at each bar's close (fills stamped before it, not at it)
    -- without joining every bar to every cash interval
    select account_id, bar_ts + interval '1 minute' as at, 0 as is_fill, bar_ts, market_value,
        cast(0 as numeric) as cash_change
    from marked
    union all
    select account_id, exec_ts as at, 1 as is_fill, cast(null as timestamptz) as bar_ts,
        cast(null as numeric) as market_value, cash_change
    from cash_changes
),

running as (
    select
        timeline.*,
        sum(cash_change) over (partition by account_id order by at, is_fill
            rows between unbounded preceding and current row) as cash_delta
    from timeline
)

select
    running.account_id,
    running.bar_ts,
    accounts.initial_capital + running.cash_delta as cash,
    running.market_value,
    accounts.initial_capital + running.cash_delta + running.market_value as equity
from running
inner join {{ ref('stg_accounts') }} as accounts on accounts.account_id = running.account_id
where running.is_fill = 0
