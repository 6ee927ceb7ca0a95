-- The scorer's verdict and the lead's last activity change with nearly every engagement event; a
-- lead's own fields change when someone edits them. On `leads`, every score change rewrote the wide
-- lead row and took a new entry in each of its twelve indexes (two of them GIN), because `score`
-- and `tier` are indexed and so the update could not be HOT: 133 µs a lead, the scorer's largest
-- cost. Here a score change writes one narrow row and three small indexes (about a quarter of the
-- time, measured with pgbench on 107-lead batches). The API still shows these fields on the lead.
-- Every lead has its row, from the moment it is inserted (trigger below), so lists can join the two
-- tables with an inner join, which lets "best score first" walk the score index.
-- Inserts into `leads` wait until this migration commits, so that none slips in between the
-- backfill below and the trigger that gives every later lead its row.
lock table leads in share row exclusive mode;

create table lead_scoring_state (
    lead_id             uuid primary key references leads (id) on delete cascade,
    score               smallint check (score between 0 and 100),
    tier                text check (tier in ('hot', 'warm', 'cold')),
    confidence          text check (confidence in ('low', 'medium', 'high')),
    confidence_value    real check (confidence_value between 0 and 1),
    scored_at           timestamptz,
    last_activity_at    timestamptz
) with (fillfactor = 70); -- room for HOT updates of activity alone (it is not indexed)

insert into lead_scoring_state (lead_id, score, tier, confidence, confidence_value, scored_at, last_activity_at)
select id, score, tier, confidence, confidence_value, scored_at, last_activity_at
from leads;

-- Per statement, so that a multi-row insert adds all its rows' state in one insert.
create function add_lead_scoring_state() returns trigger
language plpgsql as $$
begin
    insert into lead_scoring_state (lead_id) select id from added;
    return null;
end;
$$;
create trigger leads_scoring_state after insert on leads
    referencing new table as added for each statement execute function add_lead_scoring_state();

-- Lists sort by score and filter by tier and score range; soft-deleted leads are filtered by the
-- join with `leads`.
create index lead_scoring_state_score_idx on lead_scoring_state (score desc nulls last);
create index lead_scoring_state_tier_idx on lead_scoring_state (tier, score desc);

drop index leads_status_score_idx, leads_tier_idx, leads_owner_score_idx, leads_score_idx;
-- Nothing updates a lead often any more, so its pages need no room kept free for HOT updates.
alter table leads reset (fillfactor);
-- The old columns stay until a later migration: services of the previous release, still running
-- while this one rolls out, read and write them. Nothing of this release does.
comment on column leads.score is 'unused: see lead_scoring_state; dropped by a later migration';
comment on column leads.tier is 'unused: see lead_scoring_state; dropped by a later migration';
comment on column leads.confidence is 'unused: see lead_scoring_state; dropped by a later migration';
comment on column leads.confidence_value is 'unused: see lead_scoring_state; dropped by a later migration';
comment on column leads.scored_at is 'unused: see lead_scoring_state; dropped by a later migration';
comment on column leads.last_activity_at is 'unused: see lead_scoring_state; dropped by a later migration';
