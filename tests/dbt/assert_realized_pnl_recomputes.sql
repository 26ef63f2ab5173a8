-- FIFO realized gross P&L, summed segment by segment from
-- trade_match_history, equals an independent recomputation from cash flows:
-- sell notional - buy notional, plus the cost of still-open long lots, minus
-- the proceeds of still-open short lots. Fees likewise: the fee shares of all
-- segments equal all fees minus those still carried by open lots. The marts
-- round money to 6 decimals per row (macros/scale.sql): equal within half a
-- unit per row summed.
with notional as (
    select account_id, strategy_id, symbol, sum(-signed_qty * fill_price) as trade_cash
    from {{ ref('stg_execs') }}
    group by account_id, strategy_id, symbol
),

open_value as (
    select account_id, strategy_id, symbol,
        sum(case when side = 'LONG' then qty_rem * avg_price else -qty_rem * avg_price end) as open_cost,
        sum(fee_rem) as open_fees,
        count(*) as lots
    from {{ ref('open_positions_lots') }}
    group by account_id, strategy_id, symbol
),

fees as (
    select account_id, strategy_id, symbol, sum(fee) as fees
    from {{ ref('stg_execs') }}
    group by account_id, strategy_id, symbol
),

matched as (
    select account_id, strategy_id, symbol,
        sum(realized_pnl_gross) as realized_pnl_gross, sum(fee_share) as fee_share, count(*) as segments
    from {{ ref('trade_match_history') }}
    group by account_id, strategy_id, symbol
)

select notional.*, open_value.open_cost, matched.realized_pnl_gross, matched.fee_share, fees.fees
from notional
left join open_value
    on open_value.account_id = notional.account_id
    and open_value.strategy_id = notional.strategy_id
    and open_value.symbol = notional.symbol
left join matched
    on matched.account_id = notional.account_id
    and matched.strategy_id = notional.strategy_id
    and matched.symbol = notional.symbol
inner join fees
    on fees.account_id = notional.account_id
    and fees.strategy_id = notional.strategy_id
    and fees.symbol = notional.symbol
where abs(coalesce(matched.realized_pnl_gross, 0) - (notional.trade_cash + coalesce(open_value.open_cost, 0)))
        > (coalesce(matched.segments, 0) + 1) * 0.0000005
    or abs(coalesce(matched.fee_share, 0) - (fees.fees - coalesce(open_value.open_fees, 0)))
        > (coalesce(matched.segments, 0) + coalesce(open_value.lots, 0) + 1) * 0.0000005
