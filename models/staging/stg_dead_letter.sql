-- Dead-letter records not yet replayed successfully, one row per dlq_id
-- (ids are content hashes: the same bad record sent twice is listed once).
with letters as (
    select distinct on (dlq_id) *
    from {{ source('raw', 'dead_letter') }}
    order by dlq_id, received_at
),

resolved as (
    select distinct dlq_id
    from {{ source('raw', 'dead_letter_replay') }}
    where outcome in ('INSERTED', 'DUPLICATE')
)

select letters.*
from letters
left join resolved on resolved.dlq_id = letters.dlq_id
where resolved.dlq_id is null
