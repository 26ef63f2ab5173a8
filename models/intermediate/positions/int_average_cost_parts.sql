-- Average-cost accounting (NautilusTrader / LEAN convention): adding to a
-- position moves the average price, reducing realizes against it, crossing
-- zero realizes the closed part and restarts at the fill price.
--
-- The average is path dependent (avg' = (avg*pos + p*q) / (pos + q)), which
-- is a linear recurrence on the cost basis C: an opening part adds p*q, a
-- closing part scales C by r = |pos after| / |pos before|. Its solution
--   C_t = exp(L_t) * sum_{j<=t} a_j * exp(-L_j),  L_t = sum_{k<=t} ln r_k
-- needs only running sums within a position cycle (flat-to-flat or flip),
-- so no recursion. Computed in float8: about 1e-12 relative, where the FIFO
-- models are exact NUMERIC.
{% set key = 'account_id, strategy_id, symbol' %}

with cycled as (
    select * from {{ ref('int_position_cycles') }}
),

parts as (
    -- the closing part belongs to the cycle it ends (the previous one on a flip)
    select
        account_id, strategy_id, symbol, order_id, fill_id, side, exec_ts, fill_seq,
        1 as part_no, 'CLOSE' as kind, cycle_no - starts_cycle as cycle_no,
        fill_price::float8 as price, close_qty::float8 as qty, (fee * close_qty / qty)::float8 as fee_part,
        abs(position_before)::float8 as abs_before, (abs(position_before) - close_qty)::float8 as abs_after
    from cycled
    where close_qty > 0
    union all
    select
        account_id, strategy_id, symbol, order_id, fill_id, side, exec_ts, fill_seq,
        2 as part_no, 'OPEN' as kind, cycle_no,
        fill_price::float8, (qty - close_qty)::float8, (fee * (qty - close_qty) / qty)::float8,
        (abs(position_after) - (qty - close_qty))::float8, abs(position_after)::float8
    from cycled
    where qty > close_qty
),

scaled as (
    select
        parts.*,
        case when kind = 'CLOSE' and abs_after > 0 then ln(abs_after / abs_before) else 0 end as log_ratio,
        coalesce(sum(case when kind = 'CLOSE' and abs_after > 0 then ln(abs_after / abs_before) else 0 end) over (
            partition by {{ key }}, cycle_no order by fill_seq, part_no
            rows between unbounded preceding and 1 preceding), 0) as log_scale_before
    from parts
),

weighted as (
    select
        scaled.*,
        case when kind = 'OPEN' then price * qty * exp(-log_scale_before) else 0 end as cost_term,
        case when kind = 'OPEN' then fee_part * exp(-log_scale_before) else 0 end as fee_term
    from scaled
),

accumulated as (
    select
        weighted.*,
        coalesce(sum(cost_term) over (partition by {{ key }}, cycle_no order by fill_seq, part_no
            rows between unbounded preceding and 1 preceding), 0) as cost_sum_before,
        coalesce(sum(fee_term) over (partition by {{ key }}, cycle_no order by fill_seq, part_no
            rows between unbounded preceding and 1 preceding), 0) as fee_sum_before
    from weighted
),

priced as (
    select
        accumulated.*,
        case when abs_before > 0 then exp(log_scale_before) * cost_sum_before / abs_before end as avg_price_before,
        case when abs_before > 0 then exp(log_scale_before) * fee_sum_before / abs_before end as avg_fee_before,
        case when abs_after > 0
            then exp(log_scale_before + log_ratio) * (cost_sum_before + cost_term) / abs_after end as avg_price_after
    from accumulated
)

select
    account_id,
    strategy_id,
    symbol,
    order_id,
    fill_id,
    exec_ts,
    fill_seq,
    part_no,
    kind,
    cycle_no,
    qty,
    price,
    abs_after,
    avg_price_before,
    avg_price_after,
    -- a SELL's closing part closes a long, a BUY's closes a short
    case when kind = 'CLOSE'
        then qty * (price - avg_price_before) * (case when side = 'SELL' then 1 else -1 end) end as realized_pnl_gross,
    case when kind = 'CLOSE' then fee_part + qty * avg_fee_before end as fee_share
from priced
