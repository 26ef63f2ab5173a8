-- The weight sizing uses, per enabled strategy: the newest row of
-- strategy_weight_history (written by tradeflow.trading.weights.update_weights, which
-- clamps how fast a weight may move), or the equal weight 1 / S for a strategy
-- never stored, so sizing always has a weight.
--   size_multiplier = weight * S
-- scales the strategy's size hint: an equal weight leaves sizes unchanged, a
-- double weight doubles them (TradePicker limits and risk checks still apply).
-- Reads only the small weight table and strategy_config (the gate reads this
-- per decision); the targets the stored weights move toward are in
-- strategy_weight_targets.
with strategies as (
    select strategy_id, 'book' as book
    from {{ ref('strategy_config') }}
    where enabled
),

book as (
    select book, count(*) as strategies
    from strategies
    group by book
),

stored as (
    select distinct on (strategy_id) strategy_id, weight, target, at, updated_by
    from {{ source('raw', 'strategy_weight_history') }}
    order by strategy_id, at desc
)

select
    strategies.strategy_id,
    -- 12 decimal places, the precision update_weights stores
    coalesce(stored.weight, round(1 / cast(book.strategies as numeric), 12)) as weight,
    stored.target,
    stored.at,
    stored.updated_by,
    case when stored.strategy_id is null then 'equal' else 'stored' end as weight_source,
    book.strategies,
    case when stored.strategy_id is null then cast(1 as numeric)
         else stored.weight * book.strategies end as size_multiplier
from strategies
join book on book.book = strategies.book
left join stored on stored.strategy_id = strategies.strategy_id
