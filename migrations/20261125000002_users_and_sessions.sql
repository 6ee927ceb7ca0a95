create table users (
    id              uuid primary key default gen_random_uuid(),
    -- stored lower-cased by the application; the constraint name is mapped to a 409
    email           text not null constraint users_email_key unique
                    check (email = lower(email) and length(email) between 3 and 254),
    name            text not null check (length(name) between 1 and 200),
    password_hash   text not null,
    role            text not null default 'sales_rep'
                    check (role in ('admin', 'manager', 'sales_rep')),
    active          boolean not null default true,
    -- per-user settings such as {"email_notifications": false}
    preferences     jsonb not null default '{}'::jsonb check (jsonb_typeof(preferences) = 'object'),
    last_login_at   timestamptz,
    -- access tokens issued before this are refused (role change, deactivation, password reset)
    sessions_valid_after timestamptz not null default 'epoch',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index users_role_idx on users (role) where active;
create trigger users_updated_at before update on users
    for each row execute function set_updated_at();

-- Opaque refresh tokens, stored as a SHA-256 hash. Every rotation stays in its family so that
-- presenting an already-rotated token can revoke the whole family (token theft detection).
create table refresh_tokens (
    id              uuid primary key default gen_random_uuid(),
    user_id         uuid not null references users (id) on delete cascade,
    token_hash      bytea not null constraint refresh_tokens_token_hash_key unique,
    family_id       uuid not null,
    replaced_by     uuid references refresh_tokens (id) on delete set null,
    expires_at      timestamptz not null,
    revoked_at      timestamptz,
    user_agent      text,
    ip              inet,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index refresh_tokens_user_idx on refresh_tokens (user_id);
create index refresh_tokens_family_idx on refresh_tokens (family_id);
create trigger refresh_tokens_updated_at before update on refresh_tokens
    for each row execute function set_updated_at();

-- Short-lived single-use tickets that let a browser open SSE/WebSocket streams
-- without putting the access token in a URL.
create table stream_tickets (
    ticket_hash     bytea primary key,
    user_id         uuid not null references users (id) on delete cascade,
    expires_at      timestamptz not null,
    used_at         timestamptz,
    created_at      timestamptz not null default now()
);
create index stream_tickets_expires_idx on stream_tickets (expires_at);
