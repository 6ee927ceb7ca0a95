-- Each lead's running signals move onto its row, as `leads.signals`: a JSON object from signal name
-- to {"value", "as_of", "count"} (services/scorer/src/stored_signals.rs). A batch locks, reads and
-- updates every lead it scores anyway; a table of their own, one row a lead and signal, cost a
-- read and an upsert more, a fifth of a batch's database time (docs/benchmarks.md, session 8).
-- The column is not indexed, so an update that moves only the signals and the last activity stays
-- HOT. `lead_signal_rows` shows them as rows.
alter table leads add column signals jsonb not null default '{}'::jsonb;
-- The stored times in UTC, whatever the server's TimeZone.
set local timezone = 'UTC';

-- Moving the signals is not an edit of the lead: its updated_at stays.
alter table leads disable trigger leads_updated_at;
update leads l
set signals = s.signals
from (select lead_id,
             jsonb_object_agg(signal, jsonb_build_object('value', value, 'as_of', as_of, 'count', count)) as signals
      from lead_signals
      group by lead_id) s
where s.lead_id = l.id;
alter table leads enable trigger leads_updated_at;

drop table lead_signals;

create view lead_signal_rows as
select l.id as lead_id,
       s.key as signal,
       (s.value ->> 'value')::float8 as value,
       (s.value ->> 'as_of')::timestamptz as as_of,
       (s.value ->> 'count')::int8 as count
from leads l
cross join lateral jsonb_each(l.signals) as s(key, value);

-- A scorer of an earlier release, still running during a rollout, reads and writes `lead_signals`.
-- It must neither score a lead from no signals nor write signals no one reads, so the name stays,
-- as a view whose reads fail with a serialization failure (every path of that release reads a
-- lead's signals before it writes any). That scorer takes the error as transient: it holds its
-- events, reporting them in progress, and hands them back when the rollout stops it, to a scorer
-- of this release. A later release drops the view and the function.
create function lead_signals_moved()
returns table (lead_id uuid, signal text, value float8, as_of timestamptz, count int8)
language plpgsql as $$
begin
    raise exception using
        errcode = 'serialization_failure',
        message = 'lead_signals moved to leads.signals in migration 14; this scorer is older than the schema',
        hint = 'Finish the rollout: a scorer of the current release takes these events.';
end
$$;
create view lead_signals as select * from lead_signals_moved();
