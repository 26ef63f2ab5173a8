-- The audit trail for readers: raw tables stay closed to the reader role,
-- this view is its window onto audit_log.
select
    audit_id,
    actor,
    action,
    target,
    details,
    ts
from {{ source('raw', 'audit_log') }}
