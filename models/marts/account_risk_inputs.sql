-- Everything the gate needs about an account, one row per account: policy,
-- status, equity and its peak, exposure, open symbols.
with portfolio as (
    select * from {{ ref('portfolio_state') }}
),

peaks as (
    select account_id, max(equity) as peak_equity
    from {{ ref('pnl_timeseries') }}
    group by account_id
)

select
    policy.*,
    portfolio.initial_capital,
    portfolio.cash,
    portfolio.equity,
    greatest(coalesce(peaks.peak_equity, portfolio.equity), portfolio.initial_capital, portfolio.equity) as peak_equity,
    portfolio.gross_exposure,
    portfolio.open_symbols
from {{ ref('stg_account_policy') }} as policy
inner join portfolio on portfolio.account_id = policy.account_id
left join peaks on peaks.account_id = policy.account_id
