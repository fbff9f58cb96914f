{#- Included by node/init.sql: reading a peer's queue for drain and run, and the payload repctl.apply takes. -#}
-- drain and run: the oldest p_limit changes queued for p_peer after sequence number p_after, each
-- field as the text it has in repctl.changes_json's payload, which drain joins without re-encoding
-- the row images. Always by the index, oldest first: sequence numbers grow past any statistics,
-- so the planner, estimating a few rows above the last analyze's histogram, would read and sort
-- the peer's whole partition for every batch (a seq scan and a sort, measured at 100-150 ms a
-- batch of 100,000 queued): a drain quadratic in its backlog.
-- The last column (the same in every row, computed once) tells whether no transaction was in
-- progress when the statement's snapshot was taken: then every change numbered below the batch's
-- last was committed or rolled back before the read, and none can turn up later
-- (src/apply/drain.rs). The snapshot does not list transactions that took their id after the last
-- one to finish; an id taken now, after the snapshot, is its lowest running one only when there
-- were none.
create or replace function repctl.read_queue(p_peer text, p_after bigint, p_limit bigint)
returns table (seq bigint, tbl text, op text, r text, o text, ts text, resolved boolean, n integer, settled boolean)
language sql volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off set enable_bitmapscan = off set enable_sort = off
as $fn$
  select q.seq, q.tbl, q.op::text, q.r::text, q.o::text, to_json(q.ts)::text, q.resolved, q.n,
         (select pg_snapshot_xmin(pg_current_snapshot()) = pg_current_xact_id())
    from repctl.queue as q
   where q.peer = p_peer and q.seq > p_after
   order by q.seq
   limit p_limit
$fn$;

-- The next batch as column arrays, when it is all inserts into one table (a bulk load): each
-- column's values, taken from the row images on the origin, so neither the images' text nor a
-- parse of it crosses to drain; the columns are the first image's keys, in jsonb's order, as the
-- table's apply function lists them. A later image lacking a key gives null for it, and one with
-- a key more than the first is sent without it, exactly as `->>` from the images does on the
-- peer; the peer refuses columns other than its own. The changes' times go along only for a
-- table whose conflict rule compares them (the peer refuses column arrays without them when its
-- rule does). No row when nothing is queued; nulls but for the first sequence number when the
-- batch holds other changes (read them with read_queue). One aggregation pass over the ordered
-- read keeps the arrays in step, oldest change first (drain checks the seqs came out in order).
create or replace function repctl.read_columns(p_peer text, p_after bigint, p_limit bigint)
returns table (seqs bigint[], payload text, columns text[], vals text[], settled boolean)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set enable_seqscan = off set enable_bitmapscan = off set enable_sort = off
as $fn$
declare
  v_first repctl.queue;
  v_versioned boolean;
begin
  select * into v_first from repctl.queue as q where q.peer = p_peer and q.seq > p_after order by q.seq limit 1;
  if not found then
    return;
  end if;
  -- node-priority's changes carry counts, which only row images hold; an append-only table's
  -- inserts go as row images, whose sequence numbers the peer checks against its batch record.
  if v_first.op <> 'I' or v_first.n is not null
     or coalesce((select t.append_only from repctl.tables as t where t.name = v_first.tbl), false) then
    return query select array[v_first.seq], null::text, null::text[], null::text[], null::boolean;
    return;
  end if;
  columns := array(select jsonb_object_keys(v_first.r));
  v_versioned := coalesce((select t.conflict in ('last-write-wins', 'node-priority') from repctl.tables as t
                            where t.name = v_first.tbl), true);
  return query execute format($q$
    select array_agg(q.seq),
           case when bool_and(q.op = 'I' and q.tbl = $4) then
             json_build_object('t', json_build_array($4), 'op', json_build_array('I')%s)::text end,
           $5, case when bool_and(q.op = 'I' and q.tbl = $4) then array[%s] end,
           (select pg_snapshot_xmin(pg_current_snapshot()) = pg_current_xact_id())
      from (select q.seq, q.tbl, q.op, q.r, q.ts from repctl.queue as q
             where q.peer = $1 and q.seq > $2 order by q.seq limit $3) as q$q$,
    case when v_versioned then $s$, 'ts', json_agg(q.ts)$s$ else '' end,
    (select string_agg(format('array_agg(q.r ->> %L)', c), ', ') from unnest(columns) as c))
  using p_peer, p_after, p_limit, v_first.tbl, columns;
end
$fn$;

-- The key of each change in a batch (repctl.apply's payload): its row image less the other columns.
create or replace function repctl.change_keys(p_changes jsonb, p_nonkey text[]) returns setof jsonb
language sql immutable set search_path = pg_catalog as $fn$
  select (case when c.op = 'D' then c.o else c.r end) - p_nonkey
    from rows from (jsonb_array_elements_text(p_changes -> 'op'), jsonb_array_elements(p_changes -> 'r'),
                    jsonb_array_elements(p_changes -> 'o')) as c(op, r, o)
$fn$;

-- Queued changes as they travel to a peer (repctl.apply's payload), in the order given: an array
-- per field, the changes at the same position in each. The peer parses this in half the time an
-- array of one object per change takes. drain builds the same in Rust (src/apply/batch.rs).
-- json, not jsonb: batches are built as text to travel, and the peer parses them once.
create or replace function repctl.changes_json(p_changes repctl.queue[]) returns json
language sql immutable strict set search_path = pg_catalog as $fn$
  select json_build_object('s', json_agg(q.seq order by q.ordinality), 't', json_agg(q.tbl order by q.ordinality),
                           'op', json_agg(q.op order by q.ordinality), 'r', json_agg(q.r order by q.ordinality),
                           'o', json_agg(q.o order by q.ordinality), 'ts', json_agg(q.ts order by q.ordinality),
                           'resolved', json_agg(q.resolved order by q.ordinality), 'n', json_agg(q.n order by q.ordinality))
    from unnest(p_changes) with ordinality as q
$fn$;

