-- Storage settings for the tables the scorer and the relays write most.
-- Room on each page for HOT updates. Most scorer writes to a lead change only its last activity,
-- and most writes to a signal change only its value, neither of which is indexed. With free space
-- on the page PostgreSQL updates such rows in place of inserting into every index (twelve on
-- leads). The setting applies to pages written from now on; VACUUM FULL applies it to old ones.
alter table leads set (fillfactor = 70);
alter table lead_signals set (fillfactor = 70);

-- The outbox is a queue: every row is deleted moments after it is inserted. With the default
-- thresholds (20% of the table dead) the relay's scan for due rows walked tens of thousands of
-- dead index entries under load; vacuum it after every thousand deletions instead, without pausing.
alter table outbox set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_cost_delay = 0);
