-- repctl {{ version | ql }}: node {{ node | ql }}. Idempotent: a second run changes nothing.
select pg_advisory_xact_lock({{ lock_key }});
create schema if not exists repctl;
revoke all on schema repctl from public;
{% if not dblink_installed %}create extension if not exists dblink with schema {{ dblink_schema | qi }};
{% endif %}
-- The seed article's advice: ordinary roles must not read peers' passwords.
revoke all on pg_catalog.pg_user_mappings from public;

create table if not exists repctl.meta (
  key text primary key,
  value text not null
);
insert into repctl.meta as m (key, value)
values ('node', {{ node | ql }}), ('version', {{ version | ql }}), ('agent', {{ agent | ql }})
on conflict (key) do update set value = excluded.value where m.value is distinct from excluded.value;

-- One row per other node: the foreign server whose user mapping reaches it.
create table if not exists repctl.peer (
  name text primary key,
  server name not null
);

-- Replicated tables; `name` is the logical name shared by every node, nsp/rel the local table.
create table if not exists repctl.tables (
  name text primary key,
  nsp name not null,
  rel name not null,
  columns text[] not null,
  key_columns text[] not null,
  where_clause text,
  mode text not null,
  on_peer_failure text not null,
  capture_fn name not null,
  apply_fn name not null,
  added_at timestamptz not null default now()
);
-- Added after 0.1.0 installs existed: conflict handling settings.
alter table repctl.tables add column if not exists conflict text not null default 'origin-wins';
alter table repctl.tables add column if not exists conflict_column text;
alter table repctl.tables add column if not exists node_priority text[];

-- Who wrote each row's current version and when, for tables whose conflict rule compares versions
-- (last-write-wins, node-priority); kept by capture and apply.
create table if not exists repctl.version (
  tbl text not null,
  k jsonb not null,
  origin text not null,
  ts timestamptz not null,
  primary key (tbl, k)
);
-- node-priority: how many writes of the row this version has seen, itself included.
alter table repctl.version add column if not exists n integer not null default 0;

-- The audit log: every conflict, with both versions, the rule and the winner.
create table if not exists repctl.conflict (
  id bigint generated always as identity primary key,
  at timestamptz not null default clock_timestamp(),
  tbl text not null,
  k jsonb not null,
  kind text not null,
  origin text not null,
  local_row jsonb,
  remote_row jsonb,
  rule text not null,
  winner text not null
);
create index if not exists conflict_at on repctl.conflict (at);

-- The queue: every change a peer has not received yet, as row images (not SQL), one partition per peer.
create sequence if not exists repctl.queue_seq as bigint;
create table if not exists repctl.queue (
  peer text not null,
  seq bigint not null default nextval('repctl.queue_seq'),
  tbl text not null,
  op "char" not null,
  r jsonb,
  o jsonb,
  xid xid8 not null default pg_current_xact_id(),
  ts timestamptz not null default clock_timestamp(),
  primary key (peer, seq)
) partition by list (peer);
-- A resolution sent back by a target that kept its row (target-wins): applied without a conflict check.
alter table repctl.queue add column if not exists resolved boolean not null default false;
-- node-priority: the count of the version the change writes (repctl.version.n).
alter table repctl.queue add column if not exists n integer;

-- The last drain batch applied here per origin, so a drain cut off after the peer's commit can
-- tell which of the origin's queued changes are already applied.
create table if not exists repctl.applied (
  origin text primary key,
  seqs bigint[] not null,
  at timestamptz not null
);
-- Out of line but not compressed: pglz took ~3 ms of every 5,000-change batch's apply to shrink
-- its 40 kB of seqs, 20 times what storing them costs; one row per origin, so space is no matter.
alter table repctl.applied alter column seqs set storage external;

-- Per peer: when a drain last delivered and how much in total.
create table if not exists repctl.delivery (
  peer text primary key,
  last_delivery timestamptz,
  delivered bigint not null default 0
);

-- One row per writing transaction in synchronous mode; its deferred trigger ships the changes at commit.
create unlogged table if not exists repctl.flush_request (
  xid xid8 primary key
);

-- The ALTER ... OPTIONS list that turns options `p_current` into `p_wanted` (null: nothing to do).
create or replace function repctl.option_changes(p_current jsonb, p_wanted jsonb) returns text
language sql immutable set search_path = pg_catalog as $fn$
  select string_agg(change, ', ' order by key) from (
    select key, format('%s %I %L', case when p_current ? key then 'set' else 'add' end, key, value) as change
      from jsonb_each_text(p_wanted) where p_current ->> key is distinct from value
    union all
    select key, format('drop %I', key) from jsonb_each_text(p_current) where not p_wanted ? key
  ) c
$fn$;

-- The CREATE ... OPTIONS list for options `p_wanted`.
create or replace function repctl.option_list(p_wanted jsonb) returns text
language sql immutable set search_path = pg_catalog as $fn$
  select string_agg(format('%I %L', key, value), ', ' order by key) from jsonb_each_text(p_wanted)
$fn$;

-- Options stored as {key=value,...} (srvoptions, umoptions) as a jsonb object.
create or replace function repctl.options_json(p_options text[]) returns jsonb
language sql immutable set search_path = pg_catalog as $fn$
  select coalesce(jsonb_object_agg(split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), '{}')
    from unnest(p_options) o
$fn$;

-- Creates the foreign server, or changes only the options that differ (a second init changes nothing).
create or replace function repctl.ensure_server(p_name name, p_options jsonb) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
  v_changes text;
begin
  if not exists (select from pg_foreign_server where srvname = p_name) then
    execute format('create server %I foreign data wrapper dblink_fdw options (%s)', p_name,
      repctl.option_list(p_options));
    return;
  end if;
  select repctl.option_changes(repctl.options_json(srvoptions), p_options) into v_changes
    from pg_foreign_server where srvname = p_name;
  if v_changes is not null then
    execute format('alter server %I options (%s)', p_name, v_changes);
  end if;
end
$fn$;

drop function if exists repctl.ensure_user_mapping(name, jsonb);
-- The same for the agent's user mapping, the only one on repctl's servers: earlier versions mapped
-- the role running init, whose mapping (and the password in it) goes.
create or replace function repctl.ensure_user_mapping(p_server name, p_role name, p_options jsonb) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
  v_changes text;
begin
  if current_user <> p_role then
    execute format('drop user mapping if exists for current_user server %I', p_server);
  end if;
  if not exists (select from pg_user_mappings where srvname = p_server and usename = p_role) then
    execute format('create user mapping for %I server %I options (%s)', p_role, p_server,
      repctl.option_list(p_options));
    return;
  end if;
  select repctl.option_changes(repctl.options_json(umoptions), p_options) into v_changes
    from pg_user_mappings where srvname = p_server and usename = p_role;
  if v_changes is not null then
    execute format('alter user mapping for %I server %I options (%s)', p_role, p_server, v_changes);
  end if;
end
$fn$;

-- Hands repctl's schema and everything in it to the agent, except each table's apply function,
-- which runs as the table's owner and which the agent may only call.
create or replace function repctl.adopt() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
  v_agent name := (select value from repctl.meta where key = 'agent');
  v_agent_oid oid := (select oid from pg_roles where rolname = v_agent);
  v_obj record;
begin
  execute format('alter schema repctl owner to %I', v_agent);
  for v_obj in
    select c.oid::regclass as rel, c.relkind = 'S' as seq from pg_class c
     where c.relnamespace = 'repctl'::regnamespace and c.relkind in ('r', 'p', 'S') and c.relowner <> v_agent_oid
       -- Sequences of identity columns follow their table.
       and not (c.relkind = 'S' and exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                                                and d.objid = c.oid and d.deptype in ('a', 'i')))
  loop
    execute format('alter %s %s owner to %I', case when v_obj.seq then 'sequence' else 'table' end, v_obj.rel, v_agent);
  end loop;
  for v_obj in
    select p.oid::regprocedure as fn, p.proname in (select apply_fn from repctl.tables) as table_apply
      from pg_proc p where p.pronamespace = 'repctl'::regnamespace
       -- dblink's own functions, when it is installed here, stay the extension's.
       and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  loop
    if v_obj.table_apply then
      execute format('grant execute on function %s to %I', v_obj.fn, v_agent);
    else
      execute format('alter function %s owner to %I', v_obj.fn, v_agent);
    end if;
  end loop;
end
$fn$;

-- Queued changes as they travel to a peer (repctl.apply's payload), in the order given: an array
-- per field, the changes at the same position in each. The peer parses this in half the time an
-- array of one object per change takes. drain builds the same in Rust (src/apply/batch.rs).
-- json, not jsonb: batches are built as text to travel, and the peer parses them once.
drop function if exists repctl.change_json(repctl.queue);
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
-- Its result gained the change's count (n); a second init keeps the function as it is.
do $do$
begin
  if not exists (select from pg_proc where proname = 'read_queue' and pronamespace = 'repctl'::regnamespace
                                      and 'n' = any (proargnames)) then
    drop function if exists repctl.read_queue(text, bigint, bigint);
  end if;
end
$do$;
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
  -- node-priority's changes carry counts, which only row images hold.
  if v_first.op <> 'I' or v_first.n is not null then
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

create or replace function repctl.changes_json(p_changes repctl.queue[]) returns json
language sql immutable strict set search_path = pg_catalog as $fn$
  select json_build_object('s', json_agg(q.seq order by q.ordinality), 't', json_agg(q.tbl order by q.ordinality),
                           'op', json_agg(q.op order by q.ordinality), 'r', json_agg(q.r order by q.ordinality),
                           'o', json_agg(q.o order by q.ordinality), 'ts', json_agg(q.ts order by q.ordinality),
                           'resolved', json_agg(q.resolved order by q.ordinality), 'n', json_agg(q.n order by q.ordinality))
    from unnest(p_changes) with ordinality as q
$fn$;

-- Raised by apply functions of tables with the conflict rule `error`: the pair stops at the change.
create or replace function repctl.conflict_error(p_tbl text, p_origin text, p_kind text, p_key jsonb,
                                                 p_here jsonb, p_before jsonb, p_after jsonb) returns boolean
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
begin
  raise exception 'repctl: conflict % on % key % (rule error): node % has %, node % changed it from % to %',
    p_kind, p_tbl, p_key, (select value from repctl.meta where key = 'node'), coalesce(p_here::text, 'no row'),
    p_origin, coalesce(p_before::text, 'no row'), coalesce(p_after::text, 'deleted')
    using errcode = 'unique_violation',
          hint = 'fix the row on one node and drain again, or change the rule: repctl alter-table --conflict RULE';
end
$fn$;

-- init proves each peer is reachable as the flush reaches it (as the agent, through the foreign
-- server and the agent's user mapping) before committing.
create or replace function repctl.check_peer(p_server name, p_peer text) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
begin
  perform {{ dblink_schema | qi }}.dblink_connect('repctl_check', p_server);
  perform {{ dblink_schema | qi }}.dblink_disconnect('repctl_check');
exception when sqlstate '2F003' then
  -- dblink's "password is required": only a superuser may connect without one.
  raise exception 'repctl: node % cannot reach peer % as agent role %, which is not a superuser: %',
    (select value from repctl.meta where key = 'node'), p_peer, current_user, sqlerrm
    using hint = 'give that peer''s peer_dsn user a password (peer_password_env) and password authentication '
                 '(scram-sha-256) in its pg_hba.conf, or set agent_superuser = true in repctl.toml';
when others then
  raise exception 'repctl: node % cannot reach peer % through foreign server %: %',
    (select value from repctl.meta where key = 'node'), p_peer, p_server, sqlerrm
    using hint = 'check that peer''s peer_dsn (host, port, dbname, user) and password, and its pg_hba.conf';
end
$fn$;

-- Before the flush opens a connection to a peer: raises unless the peer answers a connection within
-- its foreign server's connect_timeout. From PostgreSQL 16 on, dblink_connect waits for the peer in
-- a loop of its own that honours interrupts but not connect_timeout, so a peer that accepts the
-- connection and then answers nothing (frozen, hung) would hold a writer's commit forever: nothing
-- interrupts it there, as no statement_timeout runs at commit. A statement in another session is
-- interrupted, so a session on this node (through foreign server {{ self_server | ql }}, this node as
-- its peers reach it) tries the same connection under a statement_timeout of that length. (A peer
-- that stops answering in the moment between this try and the flush's own connect still holds it.)
-- Up to 15, dblink_connect honours connect_timeout itself.
create or replace function repctl.peer_answers(p_server name) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
{% if server_version_num >= 160000 %}declare
  v_timeout_s integer := (select o.option_value::integer from pg_foreign_server s, pg_options_to_table(s.srvoptions) o
                           where s.srvname = p_server and o.option_name = 'connect_timeout');
begin
  -- libpq's own rule: no connect_timeout (or 0) waits forever.
  if coalesce(v_timeout_s, 0) <= 0 then
    return;
  end if;
  perform {{ dblink_schema | qi }}.dblink_connect('repctl_self', {{ self_server | ql }});
  begin
    perform {{ dblink_schema | qi }}.dblink_exec('repctl_self', format('set statement_timeout = %s', v_timeout_s * 1000));
    perform {{ dblink_schema | qi }}.dblink_send_query('repctl_self', format('select 1 from repctl.try_connect(%L)', p_server));
    perform from {{ dblink_schema | qi }}.dblink_get_result('repctl_self') as tried(one integer);
  -- The other session's statement_timeout arrives as query_canceled, which the flush's `when others`
  -- would not catch: raised again as an error of its own.
  exception when others or query_canceled then
    perform {{ dblink_schema | qi }}.dblink_disconnect('repctl_self');
    raise exception 'no connection within % s: %', v_timeout_s, sqlerrm;
  end;
  perform {{ dblink_schema | qi }}.dblink_disconnect('repctl_self');
end
{% else %}begin
end
{% endif %}$fn$;
-- What peer_answers runs in the other session: one connection to a peer, as the flush makes it (as
-- the agent, whose user mapping it uses). Only to repctl's peers: dblink would take any other text
-- for a connection string.
create or replace function repctl.try_connect(p_server name) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
begin
  if not exists (select from repctl.peer where server = p_server) then
    raise exception 'repctl: % is not a peer''s foreign server', p_server;
  end if;
  perform {{ dblink_schema | qi }}.dblink_connect('repctl_try', p_server);
  perform {{ dblink_schema | qi }}.dblink_disconnect('repctl_try');
end
$fn$;

-- Called by every capture trigger in synchronous mode: asks for one flush at commit per transaction.
-- Called before the first captured statement of a transaction; remembers a sequence value below
-- all of this transaction's changes, so the flush finds them (and older ones) by index range.
create or replace function repctl.arm_flush() returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
begin
  if current_setting('repctl.flush_armed', true) is distinct from 'on' then
    perform set_config('repctl.flush_armed', 'on', true);
    perform set_config('repctl.flush_from', nextval('repctl.queue_seq')::text, true);
    insert into repctl.flush_request values (pg_current_xact_id()) on conflict do nothing;
  end if;
end
$fn$;

-- Runs at commit (deferred constraint trigger): ships this transaction's changes to each peer in one
-- round trip, unless older changes wait for that peer; a peer that fails keeps them queued.
create or replace function repctl.flush() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp set jit = off as $fn$
declare
  v_me xid8 := pg_current_xact_id();
  v_origin text := (select value from repctl.meta where key = 'node');
  v_peer record;
  v_payload jsonb;
  v_seqs bigint[];
  v_strict boolean;
  v_conn text;
  v_deadline timestamptz;
  v_from bigint := current_setting('repctl.flush_from')::bigint;
begin
  delete from repctl.flush_request where xid = v_me;
  -- SERIALIZABLE commits can still fail after this point; their changes wait for a drain instead.
  if current_setting('transaction_isolation') = 'serializable' then
    return null;
  end if;
  for v_peer in select name, server from repctl.peer order by name loop
    -- Changes queued earlier for this peer go first (the seed's section 3 reordering).
    if exists (select from repctl.queue q where q.peer = v_peer.name and q.seq < v_from)
       or exists (select from repctl.queue q where q.peer = v_peer.name and q.seq > v_from and q.xid <> v_me) then
      perform pg_notify({{ notify_channel | ql }}, v_peer.name);
      continue;
    end if;
    select repctl.changes_json(array_agg(q order by q.seq))::jsonb,
           array_agg(q.seq order by q.seq),
           bool_or(t.on_peer_failure = 'error')
      into v_payload, v_seqs, v_strict
      from repctl.queue q join repctl.tables t on t.name = q.tbl
     where q.peer = v_peer.name and q.seq > v_from and q.xid = v_me;
    continue when v_payload is null;
    -- The server name is derived to fit in 63 bytes, as dblink's connection names must.
    v_conn := v_peer.server;
    begin
      if not coalesce(v_conn = any ({{ dblink_schema | qi }}.dblink_get_connections()), false) then
        perform repctl.peer_answers(v_peer.server);
        perform {{ dblink_schema | qi }}.dblink_connect(v_conn, v_peer.server);
        -- Two nodes flushing changes to the same row at once would wait on each other's row locks
        -- forever; after this the later one gives up and its changes stay queued.
        perform {{ dblink_schema | qi }}.dblink_exec(v_conn, 'set lock_timeout = ''2s''');
        -- The peer gives up on an apply when this side stops waiting for it; otherwise it could
        -- still commit (harmless: the changes stay queued and apply idempotently) while holding
        -- the rows' locks against the drain that delivers them.
        perform {{ dblink_schema | qi }}.dblink_exec(v_conn,
          format('set statement_timeout = %L', (extract(epoch from {{ flush_timeout | ql }}::interval) * 1000)::bigint));
      end if;
      -- Sent asynchronously and awaited with a deadline: a peer that stops answering (frozen,
      -- network gone) must not hang the writer's commit. dblink itself would wait forever.
      perform {{ dblink_schema | qi }}.dblink_send_query(v_conn, format('select repctl.apply(%L, %L::jsonb)', v_origin, v_payload));
      -- Polled in 1 ms sleeps (pg_sleep's least). Polling without sleeping answers a lone writer
      -- up to 1 ms sooner, but with more writers than cores it burns the CPU the peer's apply
      -- needs: single-row transactions from 4 clients on 2 cores ran 540-560 TPS spinning the
      -- first 2 ms, 680-830 sleeping at once.
      v_deadline := clock_timestamp() + {{ flush_timeout | ql }}::interval;
      while {{ dblink_schema | qi }}.dblink_is_busy(v_conn) = 1 loop
        if clock_timestamp() > v_deadline then
          raise exception 'no answer within %', {{ flush_timeout | ql }};
        end if;
        perform pg_sleep(0.001);
      end loop;
      perform from {{ dblink_schema | qi }}.dblink_get_result(v_conn) as applied(n integer);
      -- The empty result that frees the connection for the next query.
      perform from {{ dblink_schema | qi }}.dblink_get_result(v_conn) as done(n integer);
      -- The rows shipped are this transaction's in that range. Not `seq = any (v_seqs)`: the
      -- planner may make that a filter, a scan of the whole array per row (20 s for 100,000 rows).
      delete from repctl.queue
       where peer = v_peer.name and seq between v_seqs[1] and v_seqs[cardinality(v_seqs)] and xid = v_me;
    exception when others then
      if coalesce(v_conn = any ({{ dblink_schema | qi }}.dblink_get_connections()), false) then
        perform {{ dblink_schema | qi }}.dblink_disconnect(v_conn);
      end if;
      perform pg_notify({{ notify_channel | ql }}, v_peer.name);
      if v_strict then
        raise exception 'repctl: peer % did not take this transaction''s changes: %', v_peer.name, sqlerrm
          using hint = 'the table is set to --on-peer-failure error; the local write is rolled back';
      end if;
      raise warning 'repctl: peer % did not take % change(s), kept in its queue: %',
        v_peer.name, cardinality(v_seqs), sqlerrm;
    end;
  end loop;
  return null;
end
$fn$;

do $do$
begin
  if not exists (select from pg_trigger where tgrelid = 'repctl.flush_request'::regclass and tgname = 'repctl_flush') then
    create constraint trigger repctl_flush after insert on repctl.flush_request
      deferrable initially deferred for each row execute function repctl.flush();
  end if;
end
$do$;

-- The one apply path, used by synchronous delivery, drain and run alike. Changes arrive in origin
-- order; consecutive changes of one table go to that table's apply function in one set-based step.
-- drain and run may send a batch of one table's inserts as column arrays (repctl.read_columns):
-- p_columns names them, in the order of the row images' keys, p_values holds one row per column
-- (a two-dimensional array), and p_changes holds just the table, one "I" and, for a table whose
-- conflict rule compares them, the changes' times.
drop function if exists repctl.apply(text, jsonb, bigint[]);
create or replace function repctl.apply(p_origin text, p_changes jsonb, p_batch bigint[] default null,
                                        p_columns text[] default null, p_values text[] default null)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp set jit = off as $fn$
declare
  v_node text := (select value from repctl.meta where key = 'node');
  v_segment record;
  v_table record;
  v_changes jsonb;
  v_nonkey text[];
  v_versions jsonb;
  v_conflict record;
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
  for v_segment in
    select p_changes -> 't' ->> 0 as tbl, false as trunc, 1::bigint as lo, jsonb_array_length(p_changes -> 't')::bigint as hi,
           true as whole
     where v_single
    union all
    select s.tbl, s.trunc, s.lo, s.hi, s.lo = 1 and s.hi = jsonb_array_length(p_changes -> 't') as whole
      from (select min(e.t) as tbl, bool_or(e.op = 'T') as trunc, min(e.ord) as lo, max(e.ord) as hi
              from (select e.*, e.ord - row_number() over (partition by e.t, e.op = 'T' order by e.ord) as grp
                      from rows from (jsonb_array_elements_text(p_changes -> 't'), jsonb_array_elements_text(p_changes -> 'op'))
                           with ordinality as e(t, op, ord)) e
             group by e.t, e.op = 'T', e.grp) s
     where not v_single
     order by lo
  loop
    select t.apply_fn, t.conflict, array(select c from unnest(t.columns) c where c <> all (t.key_columns)) as nonkey,
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
        with res as materialized (select * from repctl.%I($3, false, $2, null, $4, $5) as res where res.wins),
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
      v_versions := null;
      if v_table.conflict in ('last-write-wins', 'node-priority') then
        select jsonb_agg(jsonb_build_object('k', v.k, 'origin', v.origin, 'ts', v.ts, 'n', v.n)) into v_versions
          from repctl.version v
         where v.tbl = v_segment.tbl
           and v.k in (select repctl.change_keys(v_changes, v_table.nonkey));
      elsif v_table.conflict in ('origin-wins', 'target-wins') and not v_segment.trunc then
        -- The batch's keys this node has changes of queued for the origin: a change of such a key
        -- is concurrent with this node's, even where the values coincide.
        select jsonb_agg(distinct coalesce(q.r, q.o) - v_table.nonkey) into v_versions
          from repctl.queue q
         where q.peer = p_origin and q.tbl = v_segment.tbl
           and coalesce(q.r, q.o) - v_table.nonkey in (select repctl.change_keys(v_changes, v_table.nonkey));
      end if;
      -- The table's apply decides and writes the table (as its owner); what it decided is recorded
      -- here: the audit log, versions, and this node's own changes superseded or sent back.
      execute format($q$
        with res as materialized (select * from repctl.%I($1, $2, $3, $4, null, null)),
        logged as (
          insert into repctl.conflict (tbl, k, kind, origin, local_row, remote_row, rule, winner)
          select $5, res.k, res.kind, $3, res.local_row, res.remote_row, $6, case when res.wins then $3 else $7 end
            from res where res.kind is not null and $6 <> 'error'),
        superseded as (
          delete from repctl.queue q using res
           where $6 in ('origin-wins', 'target-wins') and res.kind is not null
             and q.peer = $3 and q.tbl = $5 and coalesce(q.r, q.o) - $8 = res.k),
        resent as (
          insert into repctl.queue (peer, tbl, op, r, o, resolved)
          select $3, $5, case when res.local_row is null then 'D' else 'U' end, res.local_row, coalesce(res.local_row, res.k), true
            from res where $6 = 'target-wins' and res.kind is not null and res.kind <> 'delete_missing' and not res.wins),
        versions as (
          insert into repctl.version as v (tbl, k, origin, ts, n)
          select $5, res.k, $3, res.ts, coalesce(res.n, 0) from res where res.wins and $6 in ('last-write-wins', 'node-priority')
          on conflict (tbl, k) do update set origin = excluded.origin, ts = excluded.ts, n = excluded.n)
        select res.kind, res.k, res.local_row, res.before_row, res.remote_row from res
         where $6 = 'error' and res.kind is not null and res.kind <> 'delete_missing' limit 1$q$, v_table.apply_fn)
        into v_conflict
        using v_changes, v_segment.trunc, p_origin, v_versions, v_segment.tbl, v_table.conflict, v_node, v_table.nonkey;
      if v_conflict.kind is not null then
        perform repctl.conflict_error(v_segment.tbl, p_origin, v_conflict.kind, v_conflict.k, v_conflict.local_row,
                                      v_conflict.before_row, v_conflict.remote_row);
      end if;
      if v_table.conflict = 'target-wins'
         and exists (select from repctl.queue where peer = p_origin and resolved and xid = pg_current_xact_id()) then
        -- Wakes `repctl run` here to send the kept rows back.
        perform pg_notify({{ notify_channel | ql }}, p_origin);
      end if;
    end if;
    v_count := v_count + coalesce(cardinality(p_values) / cardinality(p_columns), v_segment.hi - v_segment.lo + 1);
  end loop;
  if p_batch is not null then
    insert into repctl.applied as a (origin, seqs, at) values (p_origin, p_batch, now())
    on conflict (origin) do update set seqs = excluded.seqs, at = excluded.at;
  end if;
  return v_count;
end
$fn$;

{% include "node/park.sql" %}
revoke all on all functions in schema repctl from public;
{% if dblink_schema != "repctl" %}
-- dblink lives in {{ dblink_schema | ql }}, where other roles can reach it. The commit-time flush leaves
-- a named dblink connection open in the writer's session; with EXECUTE on dblink's functions, that
-- writer could send its own SQL through it to the peer. Grant it back to roles that need dblink.
do $do$
declare
  f regprocedure;
begin
  for f in select p.oid::regprocedure from pg_depend d join pg_proc p on p.oid = d.objid
            where d.refclassid = 'pg_extension'::regclass and d.classid = 'pg_proc'::regclass
              and d.refobjid = (select oid from pg_extension where extname = 'dblink') and d.deptype = 'e'
  loop
    execute format('revoke execute on function %s from public', f);
  end loop;
end
$do$;
{% endif %}
-- The agent calls dblink for the flush (and nothing else may).
{% if dblink_schema != "repctl" %}
grant usage on schema {{ dblink_schema | qi }} to {{ agent | qi }};
{% endif %}
grant execute on function {{ dblink_schema | qi }}.dblink_connect(text, text), {{ dblink_schema | qi }}.dblink_disconnect(text),
  {{ dblink_schema | qi }}.dblink_exec(text, text), {{ dblink_schema | qi }}.dblink_send_query(text, text),
  {{ dblink_schema | qi }}.dblink_is_busy(text), {{ dblink_schema | qi }}.dblink_get_result(text),
  {{ dblink_schema | qi }}.dblink_get_connections() to {{ agent | qi }};
{% if peer_role %}-- The role the other nodes log in as (peer_dsn's user) may only apply changes (and, logged in
-- from this node itself, try a connection to a peer for repctl.peer_answers).
grant usage on schema repctl to {{ peer_role | qi }};
grant execute on function repctl.apply(text, jsonb, bigint[], text[], text[]), repctl.try_connect(name) to {{ peer_role | qi }};
{% endif %}
{% for peer in peers %}
-- Peer {{ peer.name | ql }}: reached through foreign server {{ peer.server | qi }}.
create table if not exists repctl.{{ peer.partition | qi }} partition of repctl.queue for values in ({{ peer.name | ql }});
insert into repctl.peer (name, server) values ({{ peer.name | ql }}, {{ peer.server | ql }})
on conflict (name) do update set server = excluded.server where peer.server is distinct from excluded.server;
insert into repctl.delivery (peer) values ({{ peer.name | ql }}) on conflict do nothing;
select repctl.ensure_server({{ peer.server | ql }}, {{ peer.server_options | ql }}::jsonb);
grant usage on foreign server {{ peer.server | qi }} to {{ agent | qi }};
-- The options (with the password) come from a setting bound as a parameter, never from SQL text.
select repctl.ensure_user_mapping({{ peer.server | ql }}, {{ agent | ql }},
  current_setting({{ user_mappings_setting | ql }})::jsonb -> {{ peer.server | ql }});
{% endfor %}
{% if server_version_num >= 160000 %}
-- This node as its peers reach it, for repctl.peer_answers.
select repctl.ensure_server({{ self_server | ql }}, {{ self_server_options | ql }}::jsonb);
grant usage on foreign server {{ self_server | qi }} to {{ agent | qi }};
select repctl.ensure_user_mapping({{ self_server | ql }}, {{ agent | ql }},
  current_setting({{ user_mappings_setting | ql }})::jsonb -> {{ self_server | ql }});
{% endif %}
select repctl.adopt();
{% for peer in peers %}
select repctl.check_peer({{ peer.server | ql }}, {{ peer.name | ql }});
{% endfor %}
{% if server_version_num >= 160000 %}select repctl.check_peer({{ self_server | ql }}, {{ node | ql }});
{% endif %}
-- Capture joins every statement's rows with the peers: the planner must know there are few.
analyze repctl.peer;
