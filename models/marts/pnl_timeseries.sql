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

cash as (
    select
        account_id,
        exec_ts as valid_from,
        coalesce(lead(exec_ts, 1) over (partition by account_id order by exec_ts), {{ far_future }}) as valid_to,
        sum(cash_change) over (partition by account_id order by exec_ts
            rows between unbounded preceding and current row) as cash_delta
    from cash_changes
),

held_bars as (
    {{ bars_while_held('positions') }}
),

marked as (
    select account_id, bar_ts, sum(position * close) as market_value
    from held_bars
    group by account_id, bar_ts
)

select
    marked.account_id,
    marked.bar_ts,
    accounts.initial_capital + cash.cash_delta as cash,
    marked.market_value,
    accounts.initial_capital + cash.cash_delta + marked.market_value as equity
from marked
inner join cash
    on cash.account_id = marked.account_id
    and cash.valid_from < marked.bar_ts + interval '1 minute'
    and cash.valid_to >= marked.bar_ts + interval '1 minute'
inner join {{ ref('stg_accounts') }} as accounts on accounts.account_id = marked.account_id
