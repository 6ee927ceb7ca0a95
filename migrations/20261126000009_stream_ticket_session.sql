-- The sign-in a stream ticket was asked for, so signing out of it (or a stolen refresh token's
-- reuse) ends streams opened with the ticket too. Null for tickets from tokens without one.
-- Nullable with no default: adding it rewrites nothing.
alter table stream_tickets add column session_id uuid;
