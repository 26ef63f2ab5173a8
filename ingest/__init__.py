"""Ingesters: the only writers of the raw tables. Validate, deduplicate,
batch-insert; everything refused lands in dead_letter with its payload."""
