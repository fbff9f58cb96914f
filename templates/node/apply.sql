{#- Included by node/init.sql: repctl.apply, the one apply path. -#}
{%- from "version_of.sql" import version_of %}
-- A batch less the changes from p_origin already applied here: those of the last drain batch
-- (repctl.applied) and of synchronous flushes the origin stopped waiting for (repctl.applied_flush).
-- Only tables with delta columns and append-only tables need it: every other change applied
-- twice ends in the same row.
create or replace function repctl.unapplied(p_origin text, p_changes jsonb) returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $fn$
declare
  v_done bigint[];
begin
  select array_agg(e.ord) into v_done
    from jsonb_array_elements_text(p_changes -> 's') with ordinality as e(s, ord)
   where e.s::bigint in (select unnest(a.seqs) from repctl.applied as a where a.origin = p_origin
                         union all
                         select unnest(f.seqs) from repctl.applied_flush as f where f.origin = p_origin);
  if v_done is null then
    return p_changes;
  end if;
  return (select jsonb_object_agg(f.key, case when jsonb_typeof(f.value) <> 'array' then f.value else
                   (select coalesce(jsonb_agg(e.v order by e.ord), '[]')
                      from jsonb_array_elements(f.value) with ordinality as e(v, ord)
                     where e.ord <> all (v_done)) end)
            from jsonb_each(p_changes) as f);
end
$fn$;

-- The columns of a table a winning change (first old image p_before, final image p_after) decides:
-- with merge-columns those it changed, else all of p_plain if it changed any (none: it only
-- changed delta columns). Without an old image (an insert), all.
create or replace function repctl.decided_columns(p_before jsonb, p_after jsonb, p_plain text[], p_merge boolean)
returns text[] language sql immutable set search_path = pg_catalog as $fn$
  select case when p_before is null then p_plain
              when p_merge then c.changed
              when cardinality(c.changed) > 0 then p_plain
              else '{}' end
    from (select array(select e.key from jsonb_each(p_after) as e
                        where e.key = any (p_plain) and e.value is distinct from p_before -> e.key) as changed) as c
$fn$;

-- What a table's apply function returns (templates/table/apply.sql), one row per decided key.
do $do$
begin
  if not exists (select from pg_type where typname = 'apply_result' and typnamespace = 'repctl'::regnamespace) then
    create type repctl.apply_result as (k jsonb, kind text, local_row jsonb, before_row jsonb, remote_row jsonb,
                                        wins boolean, ts timestamptz, n integer);
  end if;
end
$do$;

-- repctl.table_apply calls a table's apply function by its name, in a statement of its own per
-- table: planned once per session, where an EXECUTE of the call was planned on every call (0.2 ms
-- of a one-row apply's 0.75). Rebuilt from repctl.tables by add-table, alter-table, remove-table
-- and init.
create or replace function repctl.build_table_apply() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
begin
  execute format($f$
    create or replace function repctl.table_apply(p_fn text, p_changes jsonb, p_truncate boolean, p_origin text)
    returns repctl.apply_result[] language plpgsql set search_path = pg_catalog, pg_temp
{% include "plan_settings.sql" %}
    as $b$
    begin
      if false then
        return null;%s
      end if;
      raise exception 'repctl: no apply function %%', p_fn;
    end
    $b$$f$,
    (select string_agg(format($w$
      elsif p_fn = %L then
        return (select array_agg(row(r.*)::repctl.apply_result)
                  from repctl.%I(p_changes, p_truncate, p_origin, null, null) as r);$w$, t.apply_fn, t.apply_fn),
                       '' order by t.apply_fn)
       from repctl.tables t));
end
$fn$;
select repctl.build_table_apply();

-- The one apply path, used by synchronous delivery, drain and run alike. Changes arrive in origin
-- order; consecutive changes of one table go to that table's apply function in one set-based step.
-- drain and run may send a batch of one table's inserts as column arrays (repctl.read_columns):
-- p_columns names them, in the order of the row images' keys, p_values holds one row per column
-- (a two-dimensional array), and p_changes holds just the table, one "I" and, for a table whose
-- conflict rule compares them, the changes' times.
create or replace function repctl.apply(p_origin text, p_changes jsonb, p_batch bigint[] default null,
                                        p_columns text[] default null, p_values text[] default null)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
{% include "plan_settings.sql" %}
as $fn$
declare
  v_node text := {{ node | ql }};
  v_segments refcursor;
  v_segment record;
  v_table record;
  v_columns record;
  v_changes jsonb;
  v_conflict record;
  v_results repctl.apply_result[];
  v_unstamped bigint;
  v_count integer := 0;
  -- A batch of one table without truncates, the common case, is one segment: two containment
  -- tests (every table name equals the first, no op is "T") tell, ~0.1 ms for 5,000 changes
  -- against ~4 ms for the splitting query below.
  v_single boolean := coalesce(jsonb_array_length(p_changes -> 't') > 0
                               and (p_changes -> 't') <@ jsonb_build_array(p_changes -> 't' -> 0)
                               and not (p_changes -> 'op') @> '["T"]', false);
begin
  if p_values is not null and not v_single then
    raise exception 'repctl: column arrays from node % hold changes of more than one table, or a truncate', p_origin;
  end if;
  if p_values is not null and (array_ndims(p_values) is distinct from 2 or array_length(p_values, 1) <> cardinality(p_columns)) then
    raise exception 'repctl: column arrays from node % are not one row of values per column', p_origin
      using hint = 'run the same repctl version on every node';
  end if;
  -- Marks this transaction as replication so the capture triggers do not send the changes back.
  perform set_config({{ applying_setting | ql }}, 'on', true);
  -- Waits for a schema change in progress here (alter-table --ddl), and then sees it whole.
  lock table repctl.schema_lock in access share mode;
  -- Two queries, each planned once: as one (a union of both under opposite conditions) every
  -- call started the executor for the splitting one too, a sixth of a one-row apply's CPU.
  if v_single then
    open v_segments for
      select p_changes -> 't' ->> 0 as tbl, false as trunc, 1::bigint as lo, jsonb_array_length(p_changes -> 't')::bigint as hi,
             true as whole;
  else
    open v_segments for
      select s.tbl, s.trunc, s.lo, s.hi, s.lo = 1 and s.hi = jsonb_array_length(p_changes -> 't') as whole
        from (select min(e.t) as tbl, bool_or(e.op = 'T') as trunc, min(e.ord) as lo, max(e.ord) as hi
                from (select e.*, e.ord - row_number() over (partition by e.t, e.op = 'T' order by e.ord) as grp
                        from rows from (jsonb_array_elements_text(p_changes -> 't'), jsonb_array_elements_text(p_changes -> 'op'))
                             with ordinality as e(t, op, ord)) e
               group by e.t, e.op = 'T', e.grp) s
       order by lo;
  end if;
  loop
    fetch v_segments into v_segment;
    exit when not found;
    select t.apply_fn, t.conflict, t.delta_columns, t.merge_columns, cardinality(t.delta_columns) > 0 or t.merge_columns as merging,
           t.append_only,
           (select p.prosecdef from pg_proc p where p.proname = t.apply_fn and p.pronamespace = 'repctl'::regnamespace) as definer
      into v_table from repctl.tables t where t.name = v_segment.tbl;
    if v_table.apply_fn is null then
      raise exception 'repctl: table % from node % is not replicated on node %', v_segment.tbl, p_origin, v_node
        using hint = 'run repctl add-table for it, or repctl remove-table on every node';
    end if;
    -- The table's owner owns its apply function and may ALTER it: made SECURITY INVOKER, it would
    -- run that owner's code with the agent's rights.
    if v_table.definer is distinct from true then
      raise exception 'repctl: the apply function of % on node % is not SECURITY DEFINER (altered?); run repctl alter-table % to reinstall it',
        v_segment.tbl, v_node, v_segment.tbl;
    end if;
    -- Consecutive changes of one table go to its apply function together (the same slice of each
    -- field's array); a batch of one table (the common case) is passed on as it came.
    v_changes := case when v_segment.whole then p_changes
                      else (select jsonb_object_agg(f.key, jsonb_path_query_array(f.value,
                                     format('$[%s to %s]', v_segment.lo - 1, v_segment.hi - 1)::jsonpath))
                              from jsonb_each(p_changes) as f) end;
    if p_values is not null then
      if v_table.conflict in ('origin-wins', 'target-wins')
         and exists (select from repctl.queue q where q.peer = p_origin and q.tbl = v_segment.tbl) then
        raise exception 'repctl: node % has changes of % queued for node %, which may be concurrent with its inserts',
          v_node, v_segment.tbl, p_origin
          using hint = 'sent again as row images, which compare them';
      end if;
      -- Column arrays are inserts with nothing to decide (a key this node has fails them whole):
      -- nothing to log, supersede or send back, only the versions that the apply function of a
      -- table whose rule compares them returns. A statement of its own, planned in a fraction of
      -- the time of the one below (EXECUTE plans on every call). No condition on the rule here: a
      -- constant false one would have the planner skip the call, and the insert with it.
      -- A key new to the table may still have a version here (deleted here later than the
      -- insert, say): the versions must decide it, so the batch fails and comes again as row images.
      execute format($q$
        with res as materialized (select * from repctl.%I($3, false, $2, $4, $5) as res where res.wins),
        stamped as (
          insert into repctl.version as v (tbl, k, origin, ts)
          select $1, res.k, $2, res.ts from res
          on conflict (tbl, k) do nothing
          returning 1)
        select (select count(*) from res) - (select count(*) from stamped)$q$, v_table.apply_fn)
        into v_unstamped
        using v_segment.tbl, p_origin, v_changes, p_columns, p_values;
      if v_unstamped > 0 then
        raise exception 'repctl: % of the inserts into % from node % have a version on node % already',
          v_unstamped, v_segment.tbl, p_origin, v_node
          using errcode = 'unique_violation', hint = 'sent again as row images, which compare the versions';
      end if;
    else
      if cardinality(v_table.delta_columns) > 0 or v_table.append_only then
        -- An increment applied twice would count twice; a row without a key would be there twice.
        v_changes := repctl.unapplied(p_origin, v_changes);
      end if;
      -- The table's apply locks the batch's rows, reads what decides on them (its read function),
      -- decides and writes the table (as its owner); what it decided is recorded by the statement
      -- below, run only when it returned anything.
      v_results := repctl.table_apply(v_table.apply_fn, v_changes, v_segment.trunc, p_origin);
      -- A synchronous flush does not resolve a conflict under a rule that judges by delivery order:
      -- this node's change of the row may be on its way to the origin at the same moment (queued and
      -- read by a drain, or in a flush of its own), and each node would take the other's. Refused,
      -- the origin queues the change, and the queues deliver both directions one after the other.
      if v_results is not null and v_table.conflict in ('origin-wins', 'target-wins')
         and current_setting({{ flushing_setting | ql }}, true) is not distinct from 'on'
         and exists (select from unnest(v_results) as r where r.kind is not null and r.kind <> 'merged') then
        raise exception 'repctl: a change of % from node % conflicts with the row on node % (%); queued, for % to decide in delivery order',
          v_segment.tbl, p_origin, v_node,
          (select r.kind from unnest(v_results) as r where r.kind is not null and r.kind <> 'merged' limit 1), v_table.conflict
          using errcode = 'serialization_failure';
      end if;
      -- Nothing returned: no conflict, no version to record (the common case without versions).
      if v_results is not null then
        -- The table's non-key columns (those of images from before a rename too), and those but
        -- its delta columns.
        select array(select c from unnest(t.columns || array(select jsonb_object_keys(t.former_columns))) c
                      where c <> all (t.key_columns)) as nonkey,
               array(select c from unnest(t.columns) c where c <> all (t.key_columns) and c <> all (t.delta_columns)) as plain
          into v_columns from repctl.tables t where t.name = v_segment.tbl;
        -- The audit log, versions, and this node's own changes superseded or sent back.
        with res as materialized (select * from unnest(v_results)),
        logged as (
          insert into repctl.conflict (tbl, k, kind, origin, local_row, remote_row, rule, winner)
          select v_segment.tbl, res.k, res.kind, p_origin, res.local_row, res.remote_row, v_table.conflict,
                 case when res.kind = 'merged' then 'both' when res.wins then p_origin else v_node end
            from res where res.kind is not null and (v_table.conflict <> 'error' or res.kind = 'merged')),
        superseded as (
          delete from repctl.queue q using res
           where v_table.conflict in ('origin-wins', 'target-wins') and res.kind is not null
             and (not v_table.merging or res.remote_row is null or q.op = 'D')
             and q.peer = p_origin and q.tbl = v_segment.tbl and coalesce(q.r, q.o) - v_columns.nonkey = res.k),
        -- A table with delta columns or merge-columns keeps this node's changes of the key queued,
        -- less the columns the winner decided: their increments, and (merge-columns) the other
        -- columns they changed, still reach the origin.
        neutralized as (
          update repctl.queue as q
             set op = 'U',
                 o = case when q.op = 'I' then q.r || (select jsonb_object_agg(d, 0) from unnest(v_table.delta_columns) as d)
                          else q.o end,
                 r = q.r || coalesce((select jsonb_object_agg(e.key, e.value)
                                        from jsonb_each(case when q.op = 'I' then q.r else q.o end) as e
                                       where e.key = any (repctl.decided_columns(res.before_row, res.remote_row, v_columns.plain,
                                                                                 v_table.merge_columns))), '{}')
            from res
           where v_table.merging and v_table.conflict in ('origin-wins', 'target-wins') and res.kind is not null
             and res.remote_row is not null
             and q.op <> 'D' and q.peer = p_origin and q.tbl = v_segment.tbl and coalesce(q.r, q.o) - v_columns.nonkey = res.k),
        resent as (
          insert into repctl.queue (peer, tbl, op, r, o, resolved)
          select p_origin, v_segment.tbl, case when res.local_row is null then 'D' else 'U' end, res.local_row,
                 coalesce(res.local_row, res.k), true
            from res where v_table.conflict = 'target-wins' and res.kind is not null and res.kind <> 'delete_missing' and not res.wins),
        -- Without a time the key's changes only incremented delta columns, which versions do not
        -- decide. A key with a version is updated, a new one inserted: an ON CONFLICT upsert of
        -- every key also probes the jsonb key for its speculative insert (the update alone took
        -- ~14% less CPU of a 2,274-change winning apply, docs/benchmarks.md). The batch's rows are
        -- locked (see the table's apply function), so no writer here stamps their versions
        -- meanwhile; a key without a row here can get one, which the upsert of new keys takes.
        restamped as (
          update repctl.version as v set origin = p_origin, ts = res.ts, n = coalesce(res.n, 0)
            from res
           where res.wins and res.ts is not null and v_table.conflict in ('last-write-wins', 'node-priority')
             and v.tbl = v_segment.tbl and {{ version_of("res") }}
          returning v.k),
        versions as (
          insert into repctl.version as v (tbl, k, origin, ts, n)
          select v_segment.tbl, res.k, p_origin, res.ts, coalesce(res.n, 0) from res
           where res.wins and res.ts is not null and v_table.conflict in ('last-write-wins', 'node-priority')
             and res.k not in (select r.k from restamped as r)
          on conflict (tbl, k) do update set origin = excluded.origin, ts = excluded.ts, n = excluded.n)
        select res.kind, res.k, res.local_row, res.before_row, res.remote_row into v_conflict from res
         where v_table.conflict = 'error' and res.kind is not null and res.kind not in ('delete_missing', 'merged') limit 1;
        if v_conflict.kind is not null then
          perform repctl.conflict_error(v_segment.tbl, p_origin, v_conflict.kind, v_conflict.k, v_conflict.local_row,
                                        v_conflict.before_row, v_conflict.remote_row);
        end if;
      end if;
      if v_table.conflict = 'target-wins'
         and exists (select from repctl.queue where peer = p_origin and resolved and xid = pg_current_xact_id()) then
        -- Wakes `repctl run` here to send the kept rows back.
        perform pg_notify({{ notify_channel | ql }}, p_origin);
      end if;
    end if;
    v_count := v_count + coalesce(cardinality(p_values) / cardinality(p_columns), v_segment.hi - v_segment.lo + 1);
  end loop;
  close v_segments;
  if p_batch is not null then
    insert into repctl.applied as a (origin, seqs, at) values (p_origin, p_batch, now())
    on conflict (origin) do update set seqs = excluded.seqs, at = excluded.at;
  end if;
  -- A synchronous flush with changes of a table with delta columns (repctl.flush) names its
  -- transaction and the origin's oldest one still running when it found nothing else queued here:
  -- a flush of an older transaction is over, and no change of it is queued any more.
  if p_changes ? 'x' then
    delete from repctl.applied_flush where origin = p_origin and xid < (p_changes ->> 'h')::xid8;
    insert into repctl.applied_flush (origin, xid, seqs)
    select p_origin, (p_changes ->> 'x')::xid8, array(select jsonb_array_elements_text(p_changes -> 's')::bigint)
    on conflict (origin, xid) do update set seqs = excluded.seqs || applied_flush.seqs;
  end if;
  return v_count;
end
$fn$;

