{#- Included by node/init.sql: foreign servers and user mappings, created or changed option by option. -#}
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

