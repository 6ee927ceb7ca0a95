-- Each lead's running signals move from a JSON object (`leads.signals`, migration 14) to an array
-- of numbers, `leads.signal_state`: three a signal, in the scorer's fixed order of signals (the
-- names below), each its value, its `as_of` in microseconds since 1970 and its count, a count of 0
-- for a signal never seen (services/scorer/src/stored_signals.rs). A batch reads and writes every
-- lead it scores: as JSON that was about 580 bytes a lead printed by PostgreSQL, parsed by the
-- scorer, printed again and parsed again by PostgreSQL; an array of float8 goes both ways in binary
-- (docs/benchmarks.md, session 13). `lead_signal_rows` shows them as rows, as before.
alter table leads add column signal_state float8[] not null default '{}';

-- Moving the signals is not an edit of the lead: its updated_at stays.
alter table leads disable trigger leads_updated_at;
update leads l
set signal_state = s.state, signals = '{}'
from (select l.id,
             array_agg(p.v order by n.slot, p.part) as state
      from leads l
      cross join unnest(array['email_open', 'email_click', 'page_view', 'pricing_view', 'calculator_use',
                              'form_submit', 'chat_message', 'test_drive_request', 'urgency'])
                 with ordinality as n(name, slot)
      -- An entry the scorer could not have read (a field missing or of another type) becomes
      -- "never seen", as the scorer counted it.
      cross join lateral (select l.signals -> n.name as e) as entry
      cross join lateral (select jsonb_typeof(e -> 'value') = 'number'
                                 and jsonb_typeof(e -> 'count') = 'number'
                                 and jsonb_typeof(e -> 'as_of') = 'string' as readable) as check_entry
      cross join lateral (values
          (1, case when readable then (e ->> 'value')::float8 else 0 end),
          (2, case when readable then (extract(epoch from (e ->> 'as_of')::timestamptz) * 1000000)::float8 else 0 end),
          (3, case when readable then (e ->> 'count')::float8 else 0 end)) as p(part, v)
      where l.signals <> '{}'
      group by l.id) s
where s.id = l.id;
alter table leads enable trigger leads_updated_at;

-- Scoring moves signal_state now, not signals: it is what tells the scorer's updates from edits.
drop trigger leads_updated_at on leads;
create trigger leads_updated_at before update on leads
    for each row when (
        old.version is distinct from new.version
        or (old.scored_at, old.last_activity_at, old.signal_state)
           is not distinct from (new.scored_at, new.last_activity_at, new.signal_state))
    execute function set_updated_at();

create or replace view lead_signal_rows as
select l.id as lead_id,
       n.name as signal,
       l.signal_state[3 * n.slot - 2] as value,
       timestamptz 'epoch' + l.signal_state[3 * n.slot - 1]::int8 * interval '1 microsecond' as as_of,
       l.signal_state[3 * n.slot]::int8 as count
from leads l
cross join unnest(array['email_open', 'email_click', 'page_view', 'pricing_view', 'calculator_use',
                        'form_submit', 'chat_message', 'test_drive_request', 'urgency'])
           with ordinality as n(name, slot)
-- Only what the scorer reads as a signal (stored_signals.rs): whole counts and times a float8
-- holds exactly and a finite value. NaN sorts above every number in PostgreSQL, so the upper
-- bounds leave it out.
where l.signal_state[3 * n.slot] between 1 and 9007199254740992
  and l.signal_state[3 * n.slot] = trunc(l.signal_state[3 * n.slot])
  and l.signal_state[3 * n.slot - 1] between -9007199254740992 and 9007199254740992
  and l.signal_state[3 * n.slot - 1] = trunc(l.signal_state[3 * n.slot - 1])
  and l.signal_state[3 * n.slot - 2] > '-Infinity' and l.signal_state[3 * n.slot - 2] < 'Infinity';

-- A scorer of the release before, still running during a rollout, reads `signals` (now always
-- empty) and names it in every update it makes to a lead. Such an update fails with a
-- serialization failure, which that scorer takes as transient: it holds its events and hands them
-- back when the rollout stops it, to a scorer of this release, instead of scoring from no signals.
-- A later release drops the column and this trigger.
create function leads_signals_column_moved()
returns trigger
language plpgsql as $$
begin
    raise exception using
        errcode = 'serialization_failure',
        message = 'leads.signals moved to leads.signal_state in migration 20; this scorer is older than the schema',
        hint = 'Finish the rollout: a scorer of the current release takes these events.';
end
$$;
create trigger leads_signals_column_moved before update of signals on leads
    for each row execute function leads_signals_column_moved();
