{#- Included by node/init.sql: who may call what. -#}
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
