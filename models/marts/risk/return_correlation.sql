-- Pearson correlation of daily returns for every ordered pair of symbols,
-- over the days both have in their daily_returns window (so at most
-- risk_window_days). NULL under two common days or with a flat series.
-- Retractable sums only: a new bar changes its symbol's newest return and
-- the sums of the pairs with that symbol (work O(symbols), state O(symbols^2)).
with window_returns as (
    select symbol, trading_day, daily_return from {{ ref('daily_returns') }}
),

sums as (
    select
        a.symbol as symbol_a,
        b.symbol as symbol_b,
        count(*) as days,
        sum(a.daily_return) as sum_a,
        sum(b.daily_return) as sum_b,
        sum(a.daily_return * a.daily_return) as sum_aa,
        sum(b.daily_return * b.daily_return) as sum_bb,
        sum(a.daily_return * b.daily_return) as sum_ab
    from window_returns as a
    inner join window_returns as b
        on b.trading_day = a.trading_day
        and b.symbol <> a.symbol
    group by a.symbol, b.symbol
)

select
    symbol_a,
    symbol_b,
    days,
    case when days >= 2 and (days * sum_aa - sum_a * sum_a) > 0 and (days * sum_bb - sum_b * sum_b) > 0
        then (days * sum_ab - sum_a * sum_b)
            / sqrt((days * sum_aa - sum_a * sum_a) * (days * sum_bb - sum_b * sum_b))
    end as correlation
from sums
