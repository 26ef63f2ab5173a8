-- Target weight per enabled strategy: half equal weight, half score share.
--   blend_i = 0.5 / S + 0.5 * share_i
--   share_i = max(shrunk_sharpe_i, 0) / sum_j max(shrunk_sharpe_j, 0)
--             (1 / S when no strategy has a positive score)
-- then each weight is clamped to [weight_floor, weight_cap] and the weights
-- left unclamped are rescaled so that all sum to 1 (the clamped ones keep the
-- floor / cap). One pass: should that rescaling push an unclamped weight past
-- the cap or below the floor, it stays there (it cannot happen with the
-- defaults until S > 25; see docs/scoreboard.md). When every weight is clamped
-- (or the cap and floor cannot sum to 1), all are rescaled proportionally.
-- S = enabled strategies in strategy_config; strategies without paper trades
-- score 0. The totals are joined back on a constant key ('book') so every join
-- has an equality (RisingWave and Materialize need one).
{% set floor = var('weight_floor') %}
{% set cap = var('weight_cap') %}

with strategies as (
    select strategy_id, 'book' as book
    from {{ ref('strategy_config') }}
    where enabled
),

scored as (
    select
        strategies.strategy_id,
        strategies.book,
        coalesce(perf.shrunk_sharpe, 0) as shrunk_sharpe,
        cast(greatest(coalesce(perf.shrunk_sharpe, 0), 0) as numeric) as score
    from strategies
    left join {{ ref('strategy_perf_latest') }} as perf on perf.strategy_id = strategies.strategy_id
),

book as (
    select book, count(*) as strategies, sum(score) as score_total
    from scored
    group by book
),

blended as (
    select
        scored.strategy_id,
        scored.book,
        scored.shrunk_sharpe,
        book.strategies,
        case when book.score_total > 0 then scored.score / book.score_total
             else 1 / cast(book.strategies as numeric) end as score_share,
        cast(0.5 as numeric) / book.strategies
            + cast(0.5 as numeric) * case when book.score_total > 0 then scored.score / book.score_total
                                          else 1 / cast(book.strategies as numeric) end as blend
    from scored
    join book on book.book = scored.book
),

clamped as (
    select
        blended.*,
        case when blend < {{ floor }} then cast({{ floor }} as numeric)
             when blend > {{ cap }} then cast({{ cap }} as numeric)
             else blend end as clamped,
        blend < {{ floor }} or blend > {{ cap }} as is_clamped
    from blended
),

clamp_totals as (
    select
        book,
        sum(clamped) as clamped_total,
        sum(case when is_clamped then clamped else 0 end) as fixed_total,
        sum(case when is_clamped then 0 else blend end) as free_total
    from clamped
    group by book
)

-- rounded to 12 decimal places, the precision weights are stored with
select
    clamped.strategy_id,
    clamped.strategies,
    clamped.shrunk_sharpe,
    round(clamped.score_share, 12) as score_share,
    round(clamped.blend, 12) as blend,
    clamped.is_clamped,
    round(case
        when clamp_totals.free_total > 0 and clamp_totals.fixed_total < 1 then
            case when clamped.is_clamped then clamped.clamped
                 else clamped.blend * (1 - clamp_totals.fixed_total) / clamp_totals.free_total end
        else clamped.clamped / clamp_totals.clamped_total
    end, 12) as target_weight
from clamped
join clamp_totals on clamp_totals.book = clamped.book
