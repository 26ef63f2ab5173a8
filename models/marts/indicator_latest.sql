-- Latest bar's indicators per (symbol, timeframe).
select distinct on (symbol, timeframe) *
from {{ ref('indicator_history') }}
order by symbol, timeframe, bar_ts desc
