-- Retention (included by node/init.sql): what grows with time rather than with the tables. The
-- conflict log and discarded changes are kept `retention_days` (repctl.toml), then pruned by
-- `repctl prune` and by `repctl run` (hourly). Nothing else is pruned: the queue and parked
-- changes leave only by delivery, retry or discard; `applied` (one row per origin, what makes a
-- cut-off batch idempotent) and `delivery` (one per peer) do not grow; `version` holds one row per
-- key of the tables whose rule compares versions, and must outlive a deleted row (a late change
-- must not bring it back).
create or replace function repctl.prune(p_keep interval) returns table (what text, pruned bigint)
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
  v_cutoff timestamptz := clock_timestamp() - p_keep;
  v_count bigint;
begin
  delete from repctl.conflict where at < v_cutoff;
  get diagnostics v_count = row_count;
  return query select 'conflict', v_count;
  delete from repctl.parked where discarded_at < v_cutoff;
  get diagnostics v_count = row_count;
  return query select 'discarded', v_count;
end
$fn$;
