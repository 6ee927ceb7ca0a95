-- no-transaction
-- Every standing-cache miss lists the user's ended sign-ins: only the latest token of each
-- sign-in (never replaced) can say so, a handful per user however many rotations came before.
-- Concurrently, so a large table stays writable while the index builds.
create index concurrently if not exists refresh_tokens_not_replaced_idx
    on refresh_tokens (user_id, revoked_at) where replaced_by is null;
