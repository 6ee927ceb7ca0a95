-- The scorer writes a few insights with every score change, and each insert paid for an index on
-- (lead_id, created_at) that no query reads (insights are read by their score) and a foreign key
-- check against leads. Deleting a lead still deletes its insights: it deletes the lead's scores,
-- and they delete their insights (`score_id ... on delete cascade`). Both drops only touch the
-- catalog, so the locks they take are brief.
drop index if exists lead_insights_lead_idx;
alter table lead_insights drop constraint if exists lead_insights_lead_id_fkey;
