-- no-transaction
-- No query reads engagement events by type (the API lists a lead's events, through the lead index),
-- yet every stored event took an entry here: about 7% of the scorer's event insert, on its
-- hottest table. A report by type can add an index of its own when one exists. Concurrently, so
-- the scorer's inserts do not queue behind the drop while the migration runs beside them.
drop index concurrently if exists lead_engagement_events_type_idx;
