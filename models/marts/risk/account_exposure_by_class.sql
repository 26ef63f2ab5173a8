-- Gross and net exposure per account by sector and by asset class
-- (dimension 'sector' or 'asset_class'), with the gross share of equity. A
-- symbol without an instruments row is in bucket 'UNCLASSIFIED'.
with classified as (
    select
        exposure.account_id,
        exposure.market_value,
        exposure.gross_exposure,
        coalesce(instruments.sector, 'UNCLASSIFIED') as sector,
        coalesce(instruments.asset_class, 'UNCLASSIFIED') as asset_class
    from {{ ref('account_symbol_exposure') }} as exposure
    left join {{ ref('stg_instruments') }} as instruments on instruments.symbol = exposure.symbol
),

grouped as (
    select account_id, 'sector' as dimension, sector as bucket, sum(gross_exposure) as gross_exposure,
           sum(market_value) as net_exposure, count(*) as symbols
    from classified
    group by account_id, sector
    union all
    select account_id, 'asset_class' as dimension, asset_class as bucket, sum(gross_exposure) as gross_exposure,
           sum(market_value) as net_exposure, count(*) as symbols
    from classified
    group by account_id, asset_class
)

select
    grouped.account_id,
    grouped.dimension,
    grouped.bucket,
    grouped.gross_exposure,
    grouped.net_exposure,
    grouped.symbols,
    grouped.gross_exposure / nullif(portfolio.equity, 0) as pct_of_equity
from grouped
inner join {{ ref('portfolio_state') }} as portfolio on portfolio.account_id = grouped.account_id
