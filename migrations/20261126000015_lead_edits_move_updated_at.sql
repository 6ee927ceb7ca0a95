-- A lead's updated_at is when someone last edited it, not when it was last scored or clicked.
-- Scoring and activity have columns of their own (scored_at, last_activity_at, signals), and
-- moving updated_at with every pixel made "recently updated" mean "recently clicked" and cost the
-- scorer a PL/pgSQL call for each lead it touched. Any other update still moves it, as does any
-- update that moves version (every edit through the API), so statements need not remember to.
drop trigger leads_updated_at on leads;
create trigger leads_updated_at before update on leads
    for each row when (
        old.version is distinct from new.version
        or (old.scored_at, old.last_activity_at, old.signals)
           is not distinct from (new.scored_at, new.last_activity_at, new.signals))
    execute function set_updated_at();
