-- Room on each page for HOT updates. Most scorer writes to a lead change only its last activity,
-- and most writes to a signal change only its value, neither of which is indexed. With free space
-- on the page PostgreSQL updates such rows in place of inserting into every index (twelve on
-- leads). The setting applies to pages written from now on; VACUUM FULL applies it to old ones.
alter table leads set (fillfactor = 70);
alter table lead_signals set (fillfactor = 70);
