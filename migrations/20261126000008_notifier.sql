-- Webhooks: when an endpoint started failing without a success since, so one that has been
-- failing for long can be disabled (and its owner told) rather than retried for ever.
alter table webhooks add column failing_since timestamptz;
alter table webhooks add column last_error text;

-- The delivery log lists a webhook's deliveries newest first.
create index webhook_deliveries_webhook_idx on webhook_deliveries (webhook_id, created_at desc);

-- Mail the server refused for good (a permanent SMTP error such as an unknown mailbox) stops
-- being retried; outages and temporary errors are retried until they pass.
alter table email_queue add column failed_at timestamptz;
