-- What the team sells; the scorer's demographic fit compares a lead's interest and budget to it.
create table inventory_items (
    id              uuid primary key default gen_random_uuid(),
    sku             text constraint inventory_items_sku_key unique,
    name            text not null check (length(name) between 1 and 200),
    category        text not null check (length(category) between 1 and 100),
    description     text,
    price           numeric(14, 2) not null check (price >= 0),
    quantity        integer not null default 0 check (quantity >= 0),
    active          boolean not null default true,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index inventory_items_category_idx on inventory_items (lower(category)) where active;
create index inventory_items_name_trgm_idx on inventory_items using gin (lower(name) gin_trgm_ops);
create trigger inventory_items_updated_at before update on inventory_items
    for each row execute function set_updated_at();

create table leads (
    id                  uuid primary key default gen_random_uuid(),
    first_name          text not null default '' check (length(first_name) <= 100),
    last_name           text not null default '' check (length(last_name) <= 100),
    email               text check (email is null or (email = lower(email) and length(email) <= 254)),
    phone               text check (length(phone) <= 50),
    company             text check (length(company) <= 200),
    job_title           text check (length(job_title) <= 200),
    source              text check (length(source) <= 100),
    status              text not null default 'new'
                        check (status in ('new', 'contacted', 'qualified', 'won', 'lost')),
    budget              numeric(14, 2) check (budget >= 0),
    interest            text check (length(interest) <= 500),
    timeline            text check (length(timeline) <= 100),
    tags                text[] not null default '{}',
    custom              jsonb not null default '{}'::jsonb check (jsonb_typeof(custom) = 'object'),
    -- first-touch campaign data (utm_source, utm_medium, ...) as the tracking side saw it
    utm                 jsonb not null default '{}'::jsonb check (jsonb_typeof(utm) = 'object'),
    repeat_customer     boolean not null default false,
    owner_id            uuid references users (id) on delete set null,
    created_by          uuid references users (id) on delete set null,
    -- the scorer's latest verdict, denormalised here so lists can filter and sort on it
    score               smallint check (score between 0 and 100),
    tier                text check (tier in ('hot', 'warm', 'cold')),
    confidence          text check (confidence in ('low', 'medium', 'high')),
    confidence_value    real check (confidence_value between 0 and 1),
    scored_at           timestamptz,
    last_activity_at    timestamptz,
    -- optimistic locking: a PATCH carrying a stale version gets 409
    version             integer not null default 1 check (version >= 1),
    deleted_at          timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    -- one column for trigram search over name, e-mail and company
    search_text         text generated always as (
                            lower(first_name || ' ' || last_name || ' ' || coalesce(email, '') || ' '
                                  || coalesce(company, ''))
                        ) stored
);
-- Lists never show soft-deleted leads, so every list index leaves them out.
create index leads_status_idx on leads (status, created_at desc) where deleted_at is null;
-- the pipeline view: one status, best score first
create index leads_status_score_idx on leads (status, score desc nulls last, created_at desc, id)
    where deleted_at is null;
create index leads_tier_idx on leads (tier, score desc) where deleted_at is null;
create index leads_owner_idx on leads (owner_id, created_at desc) where deleted_at is null;
-- "my leads", best score first
create index leads_owner_score_idx on leads (owner_id, score desc nulls last, created_at desc, id)
    where deleted_at is null;
create index leads_score_idx on leads (score desc nulls last, created_at desc, id) where deleted_at is null;
create index leads_created_idx on leads (created_at desc) where deleted_at is null;
create index leads_email_idx on leads (email) where deleted_at is null;
create index leads_tags_idx on leads using gin (tags) where deleted_at is null;
create index leads_created_by_idx on leads (created_by);
create index leads_search_trgm_idx on leads using gin (search_text gin_trgm_ops);
create trigger leads_updated_at before update on leads
    for each row execute function set_updated_at();

create table lead_activities (
    id              uuid primary key default gen_random_uuid(),
    lead_id         uuid not null references leads (id) on delete cascade,
    user_id         uuid references users (id) on delete set null,
    kind            text not null
                    check (kind in ('call', 'email', 'meeting', 'note', 'status_change', 'assignment',
                                    'score_change', 'import', 'other')),
    summary         text not null check (length(summary) between 1 and 2000),
    details         jsonb not null default '{}'::jsonb,
    occurred_at     timestamptz not null default now(),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index lead_activities_lead_idx on lead_activities (lead_id, occurred_at desc);
create index lead_activities_user_idx on lead_activities (user_id);
create trigger lead_activities_updated_at before update on lead_activities
    for each row execute function set_updated_at();

create table lead_notes (
    id              uuid primary key default gen_random_uuid(),
    lead_id         uuid not null references leads (id) on delete cascade,
    author_id       uuid references users (id) on delete set null,
    body            text not null check (length(body) between 1 and 20000),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index lead_notes_lead_idx on lead_notes (lead_id, created_at desc);
create index lead_notes_author_idx on lead_notes (author_id);
create trigger lead_notes_updated_at before update on lead_notes
    for each row execute function set_updated_at();

create table assignments (
    id              uuid primary key default gen_random_uuid(),
    lead_id         uuid not null references leads (id) on delete cascade,
    assignee_id     uuid not null references users (id),
    assigned_by     uuid references users (id) on delete set null,
    status          text not null default 'active'
                    check (status in ('active', 'transferred', 'completed')),
    note            text check (length(note) <= 2000),
    -- set when this assignment was handed on: the assignment that replaced it
    transferred_to  uuid references assignments (id) on delete set null,
    completed_at    timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
-- A lead has at most one active assignment; the database enforces it, not a racy check.
create unique index assignments_one_active_per_lead on assignments (lead_id) where status = 'active';
create index assignments_assignee_idx on assignments (assignee_id, status, created_at desc);
create index assignments_lead_idx on assignments (lead_id, created_at desc);
create index assignments_assigned_by_idx on assignments (assigned_by);
create trigger assignments_updated_at before update on assignments
    for each row execute function set_updated_at();

create table notifications (
    id              uuid primary key default gen_random_uuid(),
    -- increasing position for SSE `Last-Event-ID` resume (random ids cannot be ordered)
    seq             bigint generated always as identity constraint notifications_seq_key unique,
    user_id         uuid not null references users (id) on delete cascade,
    kind            text not null check (length(kind) between 1 and 100),
    payload         jsonb not null default '{}'::jsonb,
    -- the event that caused it: a redelivered event must not notify twice
    source_event_id uuid,
    read_at         timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint notifications_once_per_event unique (user_id, source_event_id, kind)
);
create index notifications_user_idx on notifications (user_id, seq desc);
create index notifications_unread_idx on notifications (user_id, created_at desc) where read_at is null;
create trigger notifications_updated_at before update on notifications
    for each row execute function set_updated_at();
