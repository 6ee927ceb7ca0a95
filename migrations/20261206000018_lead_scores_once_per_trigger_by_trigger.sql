-- no-transaction
-- The index that keeps a redelivered trigger from adding a second history row, keyed by the
-- trigger first: the gateway gives events time-ordered ids (UUID v7; a sender may give its own),
-- so a history row's entry goes to the index's right edge instead of to a random page among every
-- lead's (docs/benchmarks.md, session 12). `on conflict (lead_id, trigger_event_id)` finds it whatever the columns' order.
-- Concurrently, so scoring goes on meanwhile; migration 19 drops the index it replaces. Not `if not
-- exists`: a build that failed leaves an invalid index of this name behind, and this must then fail
-- (drop that index and migrate again) rather than take it for done.
create unique index concurrently lead_scores_once_per_trigger_event
    on lead_scores (trigger_event_id, lead_id) where trigger_event_id is not null;
