-- The matches of the paper (shadow) accounts: one account per strategy,
-- account_id 'paper:<strategy_id>', fed by the paper broker alongside the
-- live accounts. The gate decides every signal for them (no open-symbol cap,
-- not weighted), so their trades score each strategy without the selection
-- bias of live routing. Same columns as trade_match_history.
select matches.*
from {{ ref('trade_match_history') }} as matches
where matches.account_id like 'paper:%'
