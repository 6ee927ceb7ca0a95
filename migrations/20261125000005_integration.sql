-- Write keys for tracking pixels and beacons; only a SHA-256 hash is kept.
create table tracking_keys (
    id              uuid primary key default gen_random_uuid(),
    name            text not null check (length(name) between 1 and 200),
    -- the first characters of the key, so people can tell keys apart without the secret
    key_prefix      text not null,
    key_hash        bytea not null constraint tracking_keys_key_hash_key unique,
    allowed_origins text[] not null default '{}',
    created_by      uuid references users (id) on delete set null,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create trigger tracking_keys_updated_at before update on tracking_keys
    for each row execute function set_updated_at();

create table audit_log (
    id              uuid primary key default gen_random_uuid(),
    actor_id        uuid references users (id) on delete set null,
    actor_email     text,
    action          text not null,
    entity_type     text,
    entity_id       uuid,
    success         boolean not null default true,
    request_id      text,
    ip              inet,
    user_agent      text,
    details         jsonb not null default '{}'::jsonb,
    created_at      timestamptz not null default now()
);
create index audit_log_created_idx on audit_log (created_at desc);
create index audit_log_actor_idx on audit_log (actor_id, created_at desc);
create index audit_log_entity_idx on audit_log (entity_type, entity_id, created_at desc);
create index audit_log_action_idx on audit_log (action, created_at desc);

-- Transactional outbox: domain events written with the change they describe, published by a
-- relay with the row id as Nats-Msg-Id, deleted only after JetStream acknowledged them.
create table outbox (
    id              uuid primary key,
    -- logical subject (e.g. "leads.created"); the relay adds the deployment's namespace
    subject         text not null check (length(subject) between 1 and 200),
    payload         jsonb not null,
    attempts        integer not null default 0,
    last_error      text,
    -- a row JetStream refused waits with its own back-off instead of blocking the others
    next_attempt_at timestamptz not null default now(),
    created_at      timestamptz not null default now()
);
create index outbox_due_idx on outbox (next_attempt_at, created_at, id);

create table webhooks (
    id                  uuid primary key default gen_random_uuid(),
    url                 text not null check (url ~ '^https?://'),
    description         text,
    -- signing secret (Standard Webhooks "whsec_..."); needed in clear to sign deliveries
    secret              text not null,
    event_types         text[] not null default '{}',
    active              boolean not null default true,
    consecutive_failures integer not null default 0,
    disabled_at         timestamptz,
    created_by          uuid references users (id) on delete set null,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);
create trigger webhooks_updated_at before update on webhooks
    for each row execute function set_updated_at();

create table webhook_deliveries (
    id              uuid primary key default gen_random_uuid(),
    webhook_id      uuid not null references webhooks (id) on delete cascade,
    event_id        uuid not null,
    event_type      text not null,
    payload         jsonb not null,
    status          text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_status_code integer,
    last_error      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint webhook_deliveries_once unique (webhook_id, event_id)
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';
create trigger webhook_deliveries_updated_at before update on webhook_deliveries
    for each row execute function set_updated_at();

-- One row per HTTP attempt, for /api/webhooks/{id}/deliveries.
create table webhook_attempts (
    id              uuid primary key default gen_random_uuid(),
    delivery_id     uuid not null references webhook_deliveries (id) on delete cascade,
    attempt         integer not null,
    status_code     integer,
    error           text,
    duration_ms     integer not null,
    created_at      timestamptz not null default now()
);
create index webhook_attempts_delivery_idx on webhook_attempts (delivery_id, attempt);

-- Outgoing e-mail queue: an SMTP outage delays mail, never loses it.
create table email_queue (
    id              uuid primary key default gen_random_uuid(),
    notification_id uuid references notifications (id) on delete set null,
    recipient       text not null,
    subject         text not null,
    text_body       text not null,
    html_body       text not null,
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    sent_at         timestamptz,
    last_error      text,
    created_at      timestamptz not null default now(),
    constraint email_queue_once_per_notification unique (notification_id)
);
create index email_queue_due_idx on email_queue (next_attempt_at) where sent_at is null;
