-- Per lead and signal, the decayed running value the scorer folds events into, so a re-score
-- never rereads a lead's event history (see docs/scoring.md).
create table lead_signals (
    lead_id     uuid not null references leads (id) on delete cascade,
    signal      text not null,
    value       double precision not null check (value >= 0),
    as_of       timestamptz not null,
    count       bigint not null default 0 check (count >= 0),
    primary key (lead_id, signal)
);
