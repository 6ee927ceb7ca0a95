-- no-transaction
-- Replaced by `lead_scores_once_per_trigger_event` (migration 18), which holds the same pairs.
drop index concurrently if exists lead_scores_once_per_trigger;
