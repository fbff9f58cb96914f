-- Refused changes (included by node/init.sql). A change a peer refuses either stops its pair
-- (`stop`, the default) or, for a table set to `--on-apply-error park`, moves here on the origin
-- with the peer's error, and the pair goes on. Nothing leaves this table but by `repctl queue
-- retry` (back into the queue) or `repctl queue discard` (kept, marked with who and when, until
-- the retention prunes it).
create table if not exists repctl.parked (
  peer text not null,
  -- The change's sequence number in the queue it left (unique on this node).
  seq bigint not null,
  tbl text not null,
  op "char" not null,
  r jsonb,
  o jsonb,
  xid xid8 not null,
  ts timestamptz not null,
  resolved boolean not null,
  n integer,
  -- The peer's words, and its SQLSTATE.
  error text not null,
  sqlstate text,
  parked_at timestamptz not null default clock_timestamp(),
  -- `on-apply-error park`, or `queue skip` by a role.
  parked_by text not null,
  discarded_at timestamptz,
  discarded_by text,
  primary key (peer, seq)
);

-- Moves queued change p_seq for p_peer into repctl.parked, in one statement: it is in exactly one
-- of the two whatever happens. False when it is no longer queued.
create or replace function repctl.park(p_peer text, p_seq bigint, p_error text, p_sqlstate text, p_by text)
returns boolean
language sql set search_path = pg_catalog, pg_temp as $fn$
  with moved as (
    delete from repctl.queue q where q.peer = p_peer and q.seq = p_seq
    returning q.peer, q.seq, q.tbl, q.op, q.r, q.o, q.xid, q.ts, q.resolved, q.n),
  kept as (
    insert into repctl.parked (peer, seq, tbl, op, r, o, xid, ts, resolved, n, error, sqlstate, parked_by)
    select m.peer, m.seq, m.tbl, m.op, m.r, m.o, m.xid, m.ts, m.resolved, m.n, p_error, p_sqlstate, p_by
      from moved m
    returning 1)
  select exists (select from kept)
$fn$;

-- Puts parked changes (for p_peer, or every peer when null; p_seq alone, or all when null) back at
-- the tail of their queue, oldest first, with their images and times as they were, and wakes
-- `repctl run`. Returns how many went back.
create or replace function repctl.unpark(p_peer text, p_seq bigint) returns bigint
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
  v_count bigint;
  v_peer text;
begin
  with moved as (
    delete from repctl.parked p
     where p.discarded_at is null and (p_peer is null or p.peer = p_peer) and (p_seq is null or p.seq = p_seq)
    returning p.*)
  insert into repctl.queue (peer, tbl, op, r, o, ts, resolved, n)
  select m.peer, m.tbl, m.op, m.r, m.o, m.ts, m.resolved, m.n from moved m order by m.seq;
  get diagnostics v_count = row_count;
  for v_peer in select name from repctl.peer where p_peer is null or name = p_peer loop
    perform pg_notify({{ notify_channel | ql }}, v_peer);
  end loop;
  return v_count;
end
$fn$;
