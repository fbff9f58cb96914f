{#- Included by node/init.sql: schema changes of replicated tables. -#}
-- Schema changes of replicated tables. `repctl alter-table --ddl` changes a table on every node
-- together with its capture and apply functions; DDL outside it must not break them.

-- Held (access exclusive) by alter-table --ddl until it commits. repctl.apply takes it (access
-- share) before it looks up a table's apply function, so an apply waiting on a schema change then
-- sees the new function and the new table together, never the old function on the new table.
create table if not exists repctl.schema_lock ();

-- Refuses, at the end of any DDL statement, a change that would break a replicated table's
-- capture or apply here: the table gone (dropped, renamed, moved), a replicated column gone
-- (dropped, renamed) or of another type, another primary key. Additive changes pass. A superuser
-- session may go ahead deliberately with `set repctl.allow_ddl = on` (alter-table --ddl does).
create or replace function repctl.ddl_guard() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
declare
  v_table record;
  v_problem text;
begin
  if current_setting('repctl.allow_ddl', true) = 'on'
     and coalesce((select r.rolsuper from pg_roles r where r.rolname = session_user), false) then
    return;
  end if;
  for v_table in
    select t.name, t.columns, t.column_types, t.key_columns, -- By name in the catalog: to_regclass would need USAGE on the table's schema, which the
           -- agent (whose rights this runs with) does not have.
           (select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = t.nsp and c.relname = t.rel) as rel,
           format('%I.%I', t.nsp, t.rel) as local
      from repctl.tables t
  loop
    if v_table.rel is null then
      v_problem := format('%s is gone (dropped, renamed or moved)', v_table.local);
    else
      select coalesce(
               (select format('column %I of %s is replicated: it cannot be dropped or renamed', c, v_table.local)
                  from unnest(v_table.columns) as c
                 where not exists (select from pg_attribute a where a.attrelid = v_table.rel and a.attname = c
                                     and a.attnum > 0 and not a.attisdropped)
                 limit 1),
               (select format('column %I of %s is replicated as %s: it cannot become %s', c.name, v_table.local, c.type,
                              format_type(a.atttypid, a.atttypmod))
                  from unnest(v_table.columns, v_table.column_types) as c(name, type)
                  join pg_attribute a on a.attrelid = v_table.rel and a.attname = c.name and not a.attisdropped
                 where c.type is not null and format_type(a.atttypid, a.atttypmod) <> c.type
                 limit 1),
               -- The key is the primary key or (add-table --key) a unique index's columns.
               (select format('rows of %s are identified by (%s), which a unique index must keep covering', v_table.local,
                              array_to_string(v_table.key_columns, ', '))
                 where cardinality(v_table.key_columns) > 0 -- (none: append-only)
                   and not exists (
                         select from pg_index i
                          where i.indrelid = v_table.rel and i.indisunique and i.indpred is null and i.indexprs is null
                            and (select array_agg(a.attname::text order by a.attname)
                                   from unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) as k(attnum)
                                   join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum)
                                = (select array_agg(c order by c) from unnest(v_table.key_columns) as c))))
        into v_problem;
    end if;
    if v_problem is not null then
      raise exception 'repctl: % would break the replication of table % on node %: %', tg_tag, v_table.name,
        (select value from repctl.meta where key = 'node'), v_problem
        using hint = format('change it on every node with: repctl alter-table %s --ddl ''ACTIONS'' (what follows ALTER TABLE name); '
                            'a superuser can bypass this check with: set repctl.allow_ddl = on', v_table.name);
    end if;
  end loop;
end
$fn$;
do $do$
begin
  if not exists (select from pg_event_trigger where evtname = 'repctl_ddl_guard') then
    create event trigger repctl_ddl_guard on ddl_command_end execute function repctl.ddl_guard();
  end if;
end
$do$;
