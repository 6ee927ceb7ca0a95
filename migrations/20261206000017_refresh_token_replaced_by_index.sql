-- no-transaction
-- A rotated refresh token points at its successor (`replaced_by`, `on delete set null`). Deleting
-- expired tokens (`auth/expired.rs`) looks up, for each token, the tokens that point at it: without
-- an index each lookup would read the whole table. Concurrently, so sign-ins go on meanwhile.
create index concurrently if not exists refresh_tokens_replaced_by_idx on refresh_tokens (replaced_by)
    where replaced_by is not null;
