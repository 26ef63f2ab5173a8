{{ config(materialized=refreshable_materialization('stg_execs')) }}
-- One row per fill (order_id, fill_id), first-received copy wins, with the
-- signed quantity. Fills are applied per (account_id, strategy_id, symbol) in
-- (exec_ts, order_id, fill_id) order, whatever order they arrived in.
with source as (
    select * from {{ source('raw', 'exec_report_history') }}
),

deduplicated as (
    -- DISTINCT ON leads with the key and FIFO order, so a read of one key's
    -- fills uses the (account_id, strategy_id, symbol, exec_ts) index and one
    -- sort serves both this and the FIFO windows downstream. The ingester
    -- already refuses a fill id that reappears with other values.
    select distinct on (account_id, strategy_id, symbol, exec_ts, order_id, fill_id) *
    from source
    order by account_id, strategy_id, symbol, exec_ts, order_id, fill_id, received_at, batch_id
)

select
    account_id,
    strategy_id,
    symbol,
    order_id,
    fill_id,
    side,
    fill_qty,
    fill_price,
    fee,
    venue,
    exec_ts,
    case when side = 'BUY' then fill_qty else -fill_qty end as signed_qty
from deduplicated
