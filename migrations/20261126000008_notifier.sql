-- Webhooks: when an endpoint started failing without a success since, so one that has been
-- failing for long can be disabled (and its owner told) rather than retried for ever.
alter table webhooks add column failing_since timestamptz;
alter table webhooks add column last_error text;

-- The delivery log lists a webhook's deliveries newest first.
create index webhook_deliveries_webhook_idx on webhook_deliveries (webhook_id, created_at desc);

-- Sent mail is kept for a while for support; the queue only scans what is unsent.
create index email_queue_sent_idx on email_queue (sent_at) where sent_at is not null;
