-- no-transaction
-- The gateway deletes refresh tokens long past their expiry (`auth/expired.rs`), hourly: an index
-- on the expiry finds them without reading the table. Concurrently, so sign-ins go on meanwhile.
create index concurrently if not exists refresh_tokens_expires_idx on refresh_tokens (expires_at);
