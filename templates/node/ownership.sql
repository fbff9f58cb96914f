{#- Included by node/init.sql: repctl.adopt: the agent owns repctl's schema, apply functions stay with the tables' owners. -#}
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

