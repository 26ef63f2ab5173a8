-- Per account: cash (initial capital plus trade cash flows minus fees),
-- market value of open positions at the marks, equity, exposures, realized
-- and unrealized totals, and margin used (gross exposure / max_leverage).
with accounts as (
    select * from {{ ref('stg_accounts') }}
),

cash_flows as (
    select
        account_id,
        sum(-signed_qty * fill_price) as trade_cash,
        sum(fee) as fees_paid,
        count(*) as fills,
        max(exec_ts) as last_fill_ts
    from {{ ref('stg_execs') }}
    group by account_id
),

open_positions as (
    select * from {{ ref('unrealized_pnl_latest') }}
),

exposure as (
    select
        account_id,
        sum(net_qty * current_price) as market_value,
        sum(abs(net_qty * current_price)) as gross_exposure,
        count(distinct symbol) as open_symbols,
        sum(unrealized_pnl) as unrealized_pnl,
        min(mark_ts) as oldest_mark_ts
    from open_positions
    group by account_id
),

realized as (
    select account_id, sum(realized_pnl) as realized_pnl
    from {{ ref('realized_pnl_latest') }}
    group by account_id
)

select
    accounts.account_id,
    accounts.base_currency,
    accounts.status,
    accounts.initial_capital,
    accounts.initial_capital + coalesce(cash_flows.trade_cash, 0) - coalesce(cash_flows.fees_paid, 0) as cash,
    coalesce(exposure.market_value, 0) as market_value,
    accounts.initial_capital + coalesce(cash_flows.trade_cash, 0) - coalesce(cash_flows.fees_paid, 0)
        + coalesce(exposure.market_value, 0) as equity,
    coalesce(exposure.gross_exposure, 0) as gross_exposure,
    coalesce(exposure.market_value, 0) as net_exposure,
    coalesce(realized.realized_pnl, 0) as realized_pnl,
    coalesce(exposure.unrealized_pnl, 0) as unrealized_pnl,
    coalesce(cash_flows.fees_paid, 0) as fees_paid,
    coalesce(exposure.gross_exposure, 0) / accounts.max_leverage as margin_used,
    coalesce(exposure.open_symbols, 0) as open_symbols,
    coalesce(cash_flows.fills, 0) as fills,
    cash_flows.last_fill_ts,
    exposure.oldest_mark_ts
from accounts
left join cash_flows on cash_flows.account_id = accounts.account_id
left join exposure on exposure.account_id = accounts.account_id
left join realized on realized.account_id = accounts.account_id
