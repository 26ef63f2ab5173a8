-- No lot has negative remaining quantity or more than it opened with, and the
-- open lots of a key are all on one side.
select account_id, strategy_id, symbol, lot_id, side, qty_open, qty_rem
from {{ ref('open_positions_lots') }}
where qty_rem <= 0 or qty_rem > qty_open
union all
select account_id, strategy_id, symbol, 'mixed sides', min(side), null, null
from {{ ref('open_positions_lots') }}
group by account_id, strategy_id, symbol
having count(distinct side) > 1
