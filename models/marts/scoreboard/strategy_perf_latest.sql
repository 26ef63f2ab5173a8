-- Strategy scoreboard: each strategy scored over its last N paper round trips
-- (var scoreboard_window_trades), net of fees. A trade is one round trip of
-- the strategy's paper account: a row of `trades` (a position cycle of
-- (account, strategy, symbol) from flat to flat, or up to a flip) whose
-- account_id is 'paper:<strategy_id>'; a position opened by one fill and
-- closed by two is one trade. Its return is the trades view's return_pct:
--   r = realized_pnl / entry notional (qty x the average entry price),
-- net of every fee of the round trip. Over the window: mean and sample
-- standard deviation of r, per-trade Sharpe = mean / stddev, t-stat = mean /
-- (stddev / sqrt(n)), and the Sharpe shrunk toward 0 by n / (n + k) (var
-- scoreboard_shrinkage_trades), so a strategy with few trades cannot earn a
-- large weight.
-- Fewer than 2 trades (or returns with no dispersion): sharpe and t_stat are
-- NULL and shrunk_sharpe is 0. Returns and statistics are float8; P&L and
-- fees are exact NUMERIC sums.
{% set window_trades = var('scoreboard_window_trades') | int %}
{% set shrinkage = var('scoreboard_shrinkage_trades') %}

with paper_trades as (
    select
        strategy_id,
        trade_id,
        exit_ts,
        realized_pnl,
        fees,
        cast(return_pct as float8) as trade_return
    from {{ ref('trades') }}
    where account_id like 'paper:%'
),

windowed as (
    -- the newest N per strategy; trade_id breaks ties between round trips closed at one instant
    {{ first_k_per_key('paper_trades', 'strategy_id', 'exit_ts desc, trade_id desc', window_trades,
                       ['strategy_id', 'trade_id', 'exit_ts', 'realized_pnl', 'fees', 'trade_return']) }}
),

stats as (
    select
        strategy_id,
        count(*) as trades,
        avg(trade_return) as mean_return,
        stddev_samp(trade_return) as stddev_return,
        sum(realized_pnl) as net_pnl,
        sum(fees) as fees,
        min(exit_ts) as first_exit_ts,
        max(exit_ts) as last_exit_ts
    from windowed
    group by strategy_id
),

scored as (
    select
        stats.*,
        case when trades >= 2 and stddev_return > 0 then mean_return / stddev_return end as sharpe
    from stats
)

select
    strategy_id,
    trades,
    mean_return,
    stddev_return,
    sharpe,
    sharpe * sqrt(cast(trades as float8)) as t_stat,
    coalesce(sharpe * trades / cast(trades + {{ shrinkage }} as float8), 0) as shrunk_sharpe,
    net_pnl,
    fees,
    first_exit_ts,
    last_exit_ts,
    {{ window_trades }} as window_trades
from scored
