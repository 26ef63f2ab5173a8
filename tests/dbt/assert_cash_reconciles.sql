-- portfolio_state.cash = initial capital + realized gross P&L - all fees
-- - cost of open long lots + proceeds of open short lots. The marts round money
-- to 6 decimals per row (macros/scale.sql): equal within half a unit per row summed.
with realized as (
    select account_id, sum(realized_pnl_gross) as realized_pnl_gross, count(*) as segments
    from {{ ref('trade_match_history') }}
    group by account_id
),

fees as (
    select account_id, sum(fee) as fees from {{ ref('stg_execs') }} group by account_id
),

open_value as (
    select account_id, sum(case when side = 'LONG' then qty_rem * avg_price else -qty_rem * avg_price end) as open_cost
    from {{ ref('open_positions_lots') }}
    group by account_id
)

select portfolio.account_id, portfolio.cash, portfolio.initial_capital,
    realized.realized_pnl_gross, fees.fees, open_value.open_cost
from {{ ref('portfolio_state') }} as portfolio
left join realized on realized.account_id = portfolio.account_id
left join fees on fees.account_id = portfolio.account_id
left join open_value on open_value.account_id = portfolio.account_id
where abs(portfolio.cash - (portfolio.initial_capital + coalesce(realized.realized_pnl_gross, 0)
    - coalesce(fees.fees, 0) - coalesce(open_value.open_cost, 0))) > (coalesce(realized.segments, 0) + 1) * 0.0000005
