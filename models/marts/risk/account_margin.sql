-- Margin per account (docs/risk.md): each held symbol's gross exposure times
-- its margin class's rates (margin_rates; a symbol without an instruments row
-- is default_margin_class). margin_available = equity - initial margin (what
-- new positions may use); maintenance_excess = equity - maintenance margin,
-- negative in a margin call.
with rated as (
    select
        exposure.account_id,
        exposure.gross_exposure,
        coalesce(instruments.margin_class, '{{ var("default_margin_class") }}') as margin_class
    from {{ ref('account_symbol_exposure') }} as exposure
    left join {{ ref('stg_instruments') }} as instruments on instruments.symbol = exposure.symbol
),

required as (
    select
        rated.account_id,
        sum(rated.gross_exposure * rates.initial_rate) as initial_margin,
        sum(rated.gross_exposure * rates.maintenance_rate) as maintenance_margin
    from rated
    inner join {{ ref('margin_rates') }} as rates on rates.margin_class = rated.margin_class
    group by rated.account_id
)

select
    portfolio.account_id,
    portfolio.equity,
    portfolio.gross_exposure,
    coalesce(required.initial_margin, 0) as initial_margin,
    coalesce(required.maintenance_margin, 0) as maintenance_margin,
    portfolio.equity - coalesce(required.initial_margin, 0) as margin_available,
    portfolio.equity - coalesce(required.maintenance_margin, 0) as maintenance_excess,
    portfolio.equity < coalesce(required.maintenance_margin, 0) as margin_call
from {{ ref('portfolio_state') }} as portfolio
left join required on required.account_id = portfolio.account_id
