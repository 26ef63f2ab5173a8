-- Per account: cash (initial capital plus trade cash flows minus fees),
-- market value of open positions at the marks, equity, exposures, realized
-- and unrealized totals, and margin used (gross exposure / max_leverage).
-- Marks are unrealized_pnl_latest's (the last close at or before the read's
-- as_of); a symbol with no close yet counts at cost (the signed notional of
-- the account's fills in it), as in pnl_timeseries. Exact NUMERIC inside; money
-- columns at 6 decimals (macros/scale.sql).
with accounts as (
    select * from {{ ref('stg_accounts') }}
),

symbol_flows as (
    select
        account_id,
        symbol,
        sum(signed_qty * fill_price) as net_cost,
        sum(fee) as fees_paid,
        count(*) as fills,
        max(exec_ts) as last_fill_ts
    from {{ ref('stg_execs') }}
    group by account_id, symbol
),

cash_flows as (
    select
        account_id,
        -sum(net_cost) as trade_cash,
        sum(fees_paid) as fees_paid,
        cast(sum(fills) as bigint) as fills,
        max(last_fill_ts) as last_fill_ts
    from symbol_flows
    group by account_id
),

open_positions as (
    select * from {{ ref('unrealized_pnl_latest') }}
),

open_symbols as (
    select
        account_id,
        symbol,
        sum(net_qty * current_price) as market_value,
        sum(abs(net_qty * current_price)) as gross_exposure,
        sum(unrealized_pnl) as unrealized_pnl,
        min(mark_ts) as oldest_mark_ts,
        max(case when current_price is null then 1 else 0 end) as unmarked
    from open_positions
    group by account_id, symbol
),

exposure as (
    select
        open_symbols.account_id,
        sum(case when open_symbols.unmarked = 1 then symbol_flows.net_cost else open_symbols.market_value end)
            as market_value,
        sum(case when open_symbols.unmarked = 1 then abs(symbol_flows.net_cost) else open_symbols.gross_exposure end)
            as gross_exposure,
        count(*) as open_symbols,
        sum(open_symbols.unrealized_pnl) as unrealized_pnl,
        min(open_symbols.oldest_mark_ts) as oldest_mark_ts
    from open_symbols
    inner join symbol_flows
        on symbol_flows.account_id = open_symbols.account_id
        and symbol_flows.symbol = open_symbols.symbol
    group by open_symbols.account_id
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
    {{ money('accounts.initial_capital') }} as initial_capital,
    {{ money('accounts.initial_capital + coalesce(cash_flows.trade_cash, 0) - coalesce(cash_flows.fees_paid, 0)') }} as cash,
    {{ money('coalesce(exposure.market_value, 0)') }} as market_value,
    {{ money('accounts.initial_capital + coalesce(cash_flows.trade_cash, 0) - coalesce(cash_flows.fees_paid, 0)'
             ~ ' + coalesce(exposure.market_value, 0)') }} as equity,
    {{ money('coalesce(exposure.gross_exposure, 0)') }} as gross_exposure,
    {{ money('coalesce(exposure.market_value, 0)') }} as net_exposure,
    {{ money('coalesce(realized.realized_pnl, 0)') }} as realized_pnl,
    {{ money('coalesce(exposure.unrealized_pnl, 0)') }} as unrealized_pnl,
    {{ money('coalesce(cash_flows.fees_paid, 0)') }} as fees_paid,
    {{ money('coalesce(exposure.gross_exposure, 0) / accounts.max_leverage') }} as margin_used,
    coalesce(exposure.open_symbols, 0) as open_symbols,
    coalesce(cash_flows.fills, 0) as fills,
    cash_flows.last_fill_ts,
    exposure.oldest_mark_ts
from accounts
left join cash_flows on cash_flows.account_id = accounts.account_id
left join exposure on exposure.account_id = accounts.account_id
left join realized on realized.account_id = accounts.account_id
