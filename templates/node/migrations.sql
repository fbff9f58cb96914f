{#- Included by node/init.sql: brings a node's repctl schema from the version its repctl.meta records (installed_schema) to this repctl's (schema_version); each step runs only past the recorded version. -#}
-- From schema version {{ installed_schema }} to {{ schema_version }}. node/catalog.sql creates what
-- is missing as this version has it; these steps change what an earlier version created.
{% if installed_schema < 1 %}
-- Version 1, the first recorded: what 0.1.0 installs gained before their versions were recorded
-- (each step a no-op where the install already had it).
-- Added only when missing: ALTER TABLE locks the table even when the column exists, and writers
-- lock the queue before the peer table, which init locks later, so locking it here could deadlock.
do $do$
begin
  if not exists (select from pg_attribute where attrelid = 'repctl.peer'::regclass and attname = 'counter' and not attisdropped) then
    alter table repctl.peer add column counter name;
  end if;
end
$do$;
alter table repctl.tables add column if not exists conflict text not null default 'origin-wins',
                          add column if not exists conflict_column text,
                          add column if not exists node_priority text[],
                          add column if not exists delta_columns text[] not null default '{}',
                          add column if not exists merge_columns boolean not null default false,
                          add column if not exists interleave_sequences boolean not null default false,
                          add column if not exists append_only boolean not null default false,
                          add column if not exists former_columns jsonb not null default '{}',
                          add column if not exists added_columns text[] not null default '{}',
                          add column if not exists column_types text[],
                          add column if not exists table_columns text[],
                          add column if not exists on_apply_error text not null default 'stop';
alter table repctl.version add column if not exists n integer not null default 0,
                           set (fillfactor = 50);
alter table repctl.queue add column if not exists resolved boolean not null default false,
                         add column if not exists n integer;
alter table repctl.delivery add column if not exists stopped_seq bigint,
                            add column if not exists stopped_error text,
                            add column if not exists stopped_at timestamptz,
                            set (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10);
alter table repctl.applied alter column seqs set storage external,
                           set (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10,
                                toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 100);
alter table repctl.flush_request set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
-- Functions replaced by others of another signature: the capture held changes through two SQL
-- functions; change_json became changes_json; the agent's user mapping took the role; apply and
-- table_apply gained arguments.
drop function if exists repctl.hold(text, text[], jsonb[], jsonb[], boolean);
drop function if exists repctl.json_elements(json);
drop function if exists repctl.change_json(repctl.queue);
drop function if exists repctl.ensure_user_mapping(name, jsonb);
drop function if exists repctl.apply(text, jsonb, bigint[]);
drop function if exists repctl.table_apply(text, jsonb, boolean, text, jsonb);
-- read_queue's result gained the change's count (n): dropped only when it lacks it, since a
-- running drain's prepared call of it would fail for nothing.
do $do$
begin
  if not exists (select from pg_proc where proname = 'read_queue' and pronamespace = 'repctl'::regnamespace
                                      and 'n' = any (proargnames)) then
    drop function if exists repctl.read_queue(text, bigint, bigint);
  end if;
end
$do$;
-- A table's apply function gained the version's count (n) in its result, then column arrays, then
-- p_lock: each a new function, and the old ones go (add-table renders the current one).
do $do$
declare
  v_fn name;
begin
  for v_fn in select t.apply_fn from repctl.tables t loop
    execute format('drop function if exists repctl.%I(jsonb, boolean, text, jsonb)', v_fn);
    execute format('drop function if exists repctl.%I(jsonb, boolean, text, jsonb, text[], text[])', v_fn);
  end loop;
end
$do$;
{% endif %}
{% if installed_schema < 2 %}
-- Version 2: repctl.apply passes the tables' apply functions a batch's versions at the changes'
-- positions (node/apply.sql); a function rendered before reads them keyed by k and fails on them
-- (jsonb_to_recordset of an object) until alter-table renders it again. catalog.sql adds the
-- versions' index by hash (version_hash).
{% endif %}
{% if installed_schema < 3 %}
-- Version 3: a table's apply function locks its batch's rows and reads what decides on them itself
-- (through the table's read function, which alter-table installs), where repctl.apply read it and
-- called it twice. Until alter-table renders a table's new one, its changes wait, queued.
drop function if exists repctl.table_apply(text, jsonb, boolean, text, jsonb, boolean);
do $do$
declare
  v_fn name;
begin
  for v_fn in select t.apply_fn from repctl.tables t loop
    execute format('drop function if exists repctl.%I(jsonb, boolean, text, jsonb, text[], text[], boolean)', v_fn);
  end loop;
end
$do$;
{% endif %}
