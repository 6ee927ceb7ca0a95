-- How many events a row holds (the scorer writes up to 100 to a row, as a JSON array), so the relay
-- can take about a batch of events a round and count what is pending without reading payloads.
-- A column with a constant default is added without rewriting the table.
alter table outbox add column events integer not null default 1 check (events >= 1);
