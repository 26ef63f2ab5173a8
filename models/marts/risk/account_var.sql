-- One-day value at risk per account from its current market values and the
-- daily_returns window (docs/risk.md). Scenario P&L of a day = sum over held
-- symbols of market_value * that day's return (a symbol without a return that
-- day adds 0), over the days any held symbol has one. Historical VaR at c:
-- minus the k-th worst scenario, k = ceil((1 - c) * scenarios); CVaR: minus
-- the mean of the k worst. Parametric VaR: z_c * the scenarios' sample
-- standard deviation (zero mean; equal to sqrt(w' S w) over the same days).
-- Work per mark change: the account's scenarios (<= risk_window_days rows).
with exposure as (
    select account_id, symbol, cast(market_value as float8) as market_value
    from {{ ref('account_symbol_exposure') }}
    where market_value <> 0
),

scenarios as (
    select exposure.account_id, window_returns.trading_day, sum(exposure.market_value * window_returns.daily_return) as pnl
    from exposure
    inner join {{ ref('daily_returns') }} as window_returns on window_returns.symbol = exposure.symbol
    group by exposure.account_id, window_returns.trading_day
),

ranked as (
    select
        account_id,
        pnl,
        row_number() over (partition by account_id order by pnl, trading_day) as worst_rank,
        count(*) over (partition by account_id rows between unbounded preceding and unbounded following)
            as scenarios
    from scenarios
),

tails as (
    select
        account_id,
        pnl,
        worst_rank,
        scenarios,
        cast(ceil(scenarios * 0.05) as bigint) as k_95,
        cast(ceil(scenarios * 0.01) as bigint) as k_99
    from ranked
),

measures as (
    select
        account_id,
        max(scenarios) as scenarios,
        -max(case when worst_rank = k_95 then pnl end) as var_95,
        -max(case when worst_rank = k_99 then pnl end) as var_99,
        -avg(case when worst_rank <= k_95 then pnl end) as cvar_95,
        -avg(case when worst_rank <= k_99 then pnl end) as cvar_99,
        {{ normal_quantile(95) }} * stddev_samp(pnl) as parametric_var_95,
        {{ normal_quantile(99) }} * stddev_samp(pnl) as parametric_var_99
    from tails
    group by account_id
)

select
    measures.*,
    measures.var_95 / nullif(cast(portfolio.equity as float8), 0) as var_95_pct_of_equity,
    measures.var_99 / nullif(cast(portfolio.equity as float8), 0) as var_99_pct_of_equity
from measures
inner join {{ ref('portfolio_state') }} as portfolio on portfolio.account_id = measures.account_id
