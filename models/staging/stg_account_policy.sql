-- Current risk policy of every account, defaults filled in (an account with
-- no policy row gets the defaults of the seed design: 3 open symbols, strict
-- sells, reservations for 300 s; the portfolio checks of docs/risk.md off).
with versions as (
    select distinct on (account_id) *
    from {{ source('raw', 'account_policy') }}
    order by account_id, updated_at desc
)

select
    accounts.account_id,
    accounts.status,
    accounts.max_leverage,
    coalesce(versions.max_open_symbols, 3) as max_open_symbols,
    coalesce(versions.allow_scale_in, false) as allow_scale_in,
    coalesce(versions.sell_requires_long, true) as sell_requires_long,
    versions.max_order_notional,
    versions.max_position_qty,
    versions.max_concentration_pct,
    versions.max_drawdown_pct,
    coalesce(versions.risk_per_trade_pct, 0.01) as risk_per_trade_pct,
    coalesce(versions.kill_switch, false) as kill_switch,
    coalesce(versions.reservation_ttl_seconds, 300) as reservation_ttl_seconds,
    versions.max_sector_exposure_pct,
    versions.max_correlated_exposure_pct,
    coalesce(versions.correlation_threshold, 0.7) as correlation_threshold,
    versions.max_var_pct,
    coalesce(versions.var_confidence, 0.95) as var_confidence,
    coalesce(versions.margin_check, false) as margin_check,
    versions.updated_at as policy_updated_at
from {{ ref('stg_accounts') }} as accounts
left join versions on versions.account_id = accounts.account_id
