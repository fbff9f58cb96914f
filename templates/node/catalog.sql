{#- Included by node/init.sql: repctl's tables: settings, peers, replicated tables, versions, the conflict log, the queue and the apply/delivery bookkeeping. Each table as this schema version has it: a change to one also needs a step in node/migrations.sql and db::SCHEMA_VERSION raised, for nodes installed before. -#}
create table if not exists repctl.meta (
  key text primary key,
  value text not null
);
insert into repctl.meta as m (key, value)
values ('node', {{ node | ql }}), ('version', {{ version | ql }}), ('schema_version', {{ schema_version | string | ql }}),
       ('agent', {{ agent | ql }})
on conflict (key) do update set value = excluded.value where m.value is distinct from excluded.value;

-- One row per other node: the foreign server whose user mapping reaches it.
create table if not exists repctl.peer (
  name text primary key,
  server name not null,
  -- The sequence counting the changes synchronous commits delivered to the peer (see lag).
  counter name
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
  added_at timestamptz not null default now(),
  -- Conflict handling (add-table --conflict, --conflict-column, --node-priority).
  conflict text not null default 'origin-wins',
  conflict_column text,
  node_priority text[],
  -- Counters and balances (add-table --delta): columns applied as increments; --merge-columns: an
  -- update applies only the columns it changed.
  delta_columns text[] not null default '{}',
  merge_columns boolean not null default false,
  -- add-table --interleave-sequences: the key columns' sequences step by a common stride from this
  -- node's offset (repctl.meta sequence_offset), so nodes never hand out the same key.
  interleave_sequences boolean not null default false,
  -- add-table --append-only: a table without a key; inserts replicate, nothing else may change it.
  append_only boolean not null default false,
  -- What alter-table --ddl changed, for row images queued before it: the names they may still
  -- carry (a dropped column: null; a renamed one: its new name) and the columns they may lack.
  former_columns jsonb not null default '{}',
  added_columns text[] not null default '{}',
  -- The replicated columns' types (format_type with search_path = pg_catalog), as the functions
  -- were rendered for them.
  column_types text[],
  -- Every column of the table when repctl last installed it, replicated or not: status tells a
  -- column added since from one left out with --columns.
  table_columns text[],
  -- add-table --on-apply-error: a change a peer refuses stops its pair (stop) or is parked (park;
  -- see node/park.sql).
  on_apply_error text not null default 'stop'
);

-- Who wrote each row's current version and when, for tables whose conflict rule compares versions
-- (last-write-wins, node-priority); kept by capture and apply.
create table if not exists repctl.version (
  tbl text not null,
  k jsonb not null,
  origin text not null,
  ts timestamptz not null,
  -- node-priority: how many writes of the row this version has seen, itself included.
  n integer not null default 0,
  primary key (tbl, k)
-- A row's version is rewritten at every write of the row, here or delivered: with room on its
-- page the new one is a HOT update, without another entry in the jsonb-keyed primary key (~20%
-- less CPU for an apply of 2,274 winning changes, docs/benchmarks.md).
) with (fillfactor = 50);
-- A key's version is looked up by the key's hash (bigint comparisons), then k compared once: in
-- the primary key every step down compares jsonb keys (~10% of a winning apply's CPU).
create index if not exists version_hash on repctl.version (tbl, jsonb_hash_extended(k, 0));

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
  -- A resolution sent back by a target that kept its row (target-wins): applied without comparing
  -- values, unless a change of the key is queued for its origin.
  resolved boolean not null default false,
  -- node-priority: the count of the version the change writes (repctl.version.n).
  n integer,
  primary key (peer, seq)
) partition by list (peer);

-- Tables of a row or two per node, rewritten at every batch (applied, delivery) or transaction
-- (flush_request): vacuumed after a fixed number of dead rows rather than a fraction of the table
-- (which for two rows is never reached before the launcher's next visit), with room on each page
-- for the next version (HOT), so they stay a few pages however long repctl runs. The soak
-- (docs/benchmarks.md) saw repctl.applied grow ~60 kB a minute without this.

-- The last drain batch applied here per origin, so a drain cut off after the peer's commit can
-- tell which of the origin's queued changes are already applied.
create table if not exists repctl.applied (
  origin text primary key,
  seqs bigint[] not null,
  at timestamptz not null
) with (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10,
        toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 100);
-- Out of line but not compressed: pglz took ~3 ms of every 5,000-change batch's apply to shrink
-- its 40 kB of seqs, 20 times what storing them costs; one row per origin, so space is no matter.
-- Set when the table is new (CREATE TABLE takes a column's storage only from PostgreSQL 16 on).
{% if installed_schema is none %}
alter table repctl.applied alter column seqs set storage external;
{% endif %}

-- Synchronous flushes with changes of tables with delta columns applied here: a flush whose origin
-- stopped waiting (timeout) leaves its changes queued there although they were applied here, and an
-- increment must not be applied again when a drain delivers them. Kept until the origin's
-- transaction is over with nothing of it queued here (see repctl.apply).
create table if not exists repctl.applied_flush (
  origin text not null,
  xid xid8 not null,
  seqs bigint[] not null,
  primary key (origin, xid)
);

-- Per peer: when a drain last delivered and how much in total.
create table if not exists repctl.delivery (
  peer text primary key,
  last_delivery timestamptz,
  delivered bigint not null default 0,
  -- Where a pair stopped: the change the peer refused last, while it is still queued (the stop is
  -- over once it is not: delivered, parked or superseded; see node/park.sql).
  stopped_seq bigint,
  stopped_error text,
  stopped_at timestamptz
) with (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10);

-- One row per writing transaction in synchronous mode; its deferred trigger ships the changes at commit.
create unlogged table if not exists repctl.flush_request (
  xid xid8 primary key
) with (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

