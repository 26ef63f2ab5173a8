-- Realized P&L per (account_id, strategy_id, symbol) under the configured
-- method (var pnl_method: fifo | average_cost), gross, fees and net.
-- FIFO totals come from cash flows and the open lots (what is not open has
-- been realized), which reads each fill once; trade_match_history has the
-- same totals segment by segment (checked by assert_realized_pnl_recomputes).
{% set method = pnl_method() %}

with fills as (
    select
        account_id, strategy_id, symbol,
        max(exec_ts) as last_fill_ts,
        sum(-signed_qty * fill_price) as trade_cash,
        sum(fee) as fees
    from {{ ref('stg_execs') }}
    group by account_id, strategy_id, symbol
),

{% if method == 'fifo' %}
realized as (
    select
        account_id, strategy_id, symbol,
        sum(case when side = 'LONG' then qty_rem * avg_price else -qty_rem * avg_price end) as open_cost,
        sum(fee_rem) as open_fees
    from {{ ref('open_positions_lots') }}
    group by account_id, strategy_id, symbol
)

select
    fills.account_id,
    fills.strategy_id,
    fills.symbol,
    'fifo' as method,
    {{ money('fills.trade_cash + coalesce(realized.open_cost, 0)') }} as realized_pnl_gross,
    {{ money('fills.fees - coalesce(realized.open_fees, 0)') }} as fees,
    {{ money('fills.trade_cash + coalesce(realized.open_cost, 0) - (fills.fees - coalesce(realized.open_fees, 0))') }}
        as realized_pnl,
    fills.last_fill_ts as ts
{% else %}
realized as (
    select
        account_id, strategy_id, symbol,
        sum(realized_pnl_gross) as realized_pnl_gross,
        sum(fee_share) as fees
    from {{ ref('int_average_cost_parts') }}
    where kind = 'CLOSE'
    group by account_id, strategy_id, symbol
)

select
    fills.account_id,
    fills.strategy_id,
    fills.symbol,
    'average_cost' as method,
    {{ money('coalesce(realized.realized_pnl_gross, 0)') }} as realized_pnl_gross,
    {{ money('coalesce(realized.fees, 0)') }} as fees,
    {{ money('coalesce(realized.realized_pnl_gross, 0) - coalesce(realized.fees, 0)') }} as realized_pnl,
    fills.last_fill_ts as ts
{% endif %}
from fills
left join realized
    on realized.account_id = fills.account_id
    and realized.strategy_id = fills.strategy_id
    and realized.symbol = fills.symbol
