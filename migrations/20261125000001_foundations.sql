-- Shared helpers every later table uses.
create extension if not exists pg_trgm;

-- Keeps updated_at honest without every statement having to remember it.
create or replace function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;
