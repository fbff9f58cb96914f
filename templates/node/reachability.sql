{#- Included by node/init.sql: proving a peer answers before init commits and before a flush connects. -#}
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

