-- Current version of each account.
select distinct on (account_id)
    account_id,
    base_currency,
    initial_capital,
    status,
    max_leverage,
    updated_at,
    updated_by
from {{ source('raw', 'accounts') }}
order by account_id, updated_at desc
