-- Every engagement event once, keyed by the envelope id, so redelivery is a no-op.
create table lead_engagement_events (
    event_id            uuid primary key,
    lead_id             uuid references leads (id) on delete cascade,
    anonymous_id        text check (length(anonymous_id) between 1 and 200),
    event_type          text not null check (length(event_type) between 1 and 200),
    properties          jsonb not null default '{}'::jsonb,
    source              text not null default 'gateway',
    user_agent          text,
    -- set for bots, link scanners and privacy proxies: stored for audit, never scored
    suppressed_reason   text,
    occurred_at         timestamptz not null,
    received_at         timestamptz not null default now(),
    check (lead_id is not null or anonymous_id is not null)
);
create index lead_engagement_events_lead_idx on lead_engagement_events (lead_id, occurred_at desc)
    where lead_id is not null;
create index lead_engagement_events_anonymous_idx on lead_engagement_events (anonymous_id, occurred_at)
    where anonymous_id is not null;
create index lead_engagement_events_type_idx on lead_engagement_events (event_type, occurred_at desc);

-- Identity stitching: an anonymous visitor later tied to a lead.
create table anonymous_identities (
    anonymous_id    text primary key check (length(anonymous_id) between 1 and 200),
    lead_id         uuid not null references leads (id) on delete cascade,
    identified_at   timestamptz not null default now()
);
create index anonymous_identities_lead_idx on anonymous_identities (lead_id);

-- Score history: one row per re-score, with the breakdown that explains it.
create table lead_scores (
    id                  uuid primary key default gen_random_uuid(),
    lead_id             uuid not null references leads (id) on delete cascade,
    total               smallint not null check (total between 0 and 100),
    engagement          real not null check (engagement between 0 and 35),
    buying_signal       real not null check (buying_signal between 0 and 40),
    demographic         real not null check (demographic between 0 and 25),
    tier                text not null check (tier in ('hot', 'warm', 'cold')),
    confidence          text not null check (confidence in ('low', 'medium', 'high')),
    confidence_value    real not null check (confidence_value between 0 and 1),
    breakdown           jsonb not null default '[]'::jsonb,
    model_version       text not null,
    trigger_event_id    uuid,
    trigger_type        text,
    created_at          timestamptz not null default now()
);
create index lead_scores_lead_idx on lead_scores (lead_id, created_at desc);
-- a redelivered trigger must not add a second history row
create unique index lead_scores_once_per_trigger on lead_scores (lead_id, trigger_event_id)
    where trigger_event_id is not null;

create table lead_insights (
    id              uuid primary key default gen_random_uuid(),
    lead_id         uuid not null references leads (id) on delete cascade,
    score_id        uuid not null references lead_scores (id) on delete cascade,
    kind            text not null check (kind in ('talking_point', 'concern', 'opportunity')),
    text            text not null,
    score           real not null default 0,
    created_at      timestamptz not null default now()
);
create index lead_insights_lead_idx on lead_insights (lead_id, created_at desc);
create index lead_insights_score_idx on lead_insights (score_id);

-- Progress of `leadflow rescore --all`, so an interrupted run resumes where it stopped.
create table rescore_runs (
    id              uuid primary key default gen_random_uuid(),
    model_version   text not null,
    last_lead_id    uuid,
    total           integer not null default 0,
    done            integer not null default 0,
    started_at      timestamptz not null default now(),
    finished_at     timestamptz
);

-- Consumers that are not naturally idempotent remember which event ids they have handled.
create table processed_events (
    consumer        text not null,
    event_id        uuid not null,
    processed_at    timestamptz not null default now(),
    primary key (consumer, event_id)
);
create index processed_events_age_idx on processed_events (processed_at);
