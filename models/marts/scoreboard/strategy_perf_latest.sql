-- Strategy scoreboard: each strategy scored over its last N paper trades
-- (var scoreboard_window_trades), net of fees. A trade is one matched FIFO
-- segment of paper_trade_match_history; its return is
--   r = realized_pnl / (matched_qty * entry price)
-- with the entry price the buy price of a closed LONG and the sell price of a
-- closed SHORT. Over the window: mean and sample standard deviation of r,
-- per-trade Sharpe = mean / stddev, t-stat = mean / (stddev / sqrt(n)), and
-- the Sharpe shrunk toward 0 by n / (n + k) (var scoreboard_shrinkage_trades),
-- so a strategy with few trades cannot earn a large weight.
-- Fewer than 2 trades (or returns with no dispersion): sharpe and t_stat are
-- NULL and shrunk_sharpe is 0. Returns and statistics are float8; P&L and
-- fees are exact NUMERIC sums.
{% set window_trades = var('scoreboard_window_trades') | int %}
{% set shrinkage = var('scoreboard_shrinkage_trades') %}

with trades as (
    select
        strategy_id,
        match_id,
        match_ts,
        realized_pnl,
        fee_share,
        cast(realized_pnl as float8)
            / cast(matched_qty * case when closed_side = 'LONG' then buy_price else sell_price end as float8)
            as trade_return
    from {{ ref('paper_trade_match_history') }}
),

windowed as (
    -- the newest N per strategy; match_id breaks ties between segments closed by one fill
    {{ first_k_per_key('trades', 'strategy_id', 'match_ts desc, match_id desc', window_trades,
                       ['strategy_id', 'match_id', 'match_ts', 'realized_pnl', 'fee_share', 'trade_return']) }}
),

stats as (
    select
        strategy_id,
        count(*) as trades,
        avg(trade_return) as mean_return,
        stddev_samp(trade_return) as stddev_return,
        sum(realized_pnl) as net_pnl,
        sum(fee_share) as fees,
        min(match_ts) as first_match_ts,
        max(match_ts) as last_match_ts
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
    first_match_ts,
    last_match_ts,
    {{ window_trades }} as window_trades
from scored
