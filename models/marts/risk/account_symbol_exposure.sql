-- Market value (signed) and gross exposure per (account, symbol) held, as
-- portfolio_state values them: net quantity at the mark, or before the
-- symbol's first close the signed notional of the account's fills in it.
with positions as (
    select
        account_id,
        symbol,
        sum(net_qty * current_price) as market_value,
        sum(abs(net_qty * current_price)) as gross_exposure,
        max(case when current_price is null then 1 else 0 end) as unmarked
    from {{ ref('unrealized_pnl_latest') }}
    group by account_id, symbol
),

flows as (
    select account_id, symbol, sum(signed_qty * fill_price) as net_cost
    from {{ ref('stg_execs') }}
    group by account_id, symbol
)

select
    positions.account_id,
    positions.symbol,
    case when positions.unmarked = 1 then flows.net_cost else positions.market_value end as market_value,
    case when positions.unmarked = 1 then abs(flows.net_cost) else positions.gross_exposure end as gross_exposure
from positions
inner join flows
    on flows.account_id = positions.account_id
    and flows.symbol = positions.symbol
