-- Dead-letter records not yet replayed successfully.
with letters as (
    select * from {{ source('raw', 'dead_letter') }}
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
