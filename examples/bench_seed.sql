-- The seed article's replication (digoal, 2012, the trigger of its multi-master section) on the
-- bench's tables, for examples/bench.rs: a per-row AFTER trigger builds the remote statements
-- with dblink_build_sql_* and sends them to the peer with dblink_exec on a persistent named
-- connection, before the local commit; a statement that fails there goes to sync_err_rec. Loop
-- prevention as the article: the trigger returns at once in a session whose application_name is
-- the replication's (the peer has the trigger too and pays that look-up, as in the article). The
-- tables have the same names on both sides, so the article's rename of the target is a no-op.
create extension if not exists dblink;
create table bench.sync_err_rec (id serial8 primary key, nsp_name name, table_name name, dst_server text,
                                 dst_query text, create_time timestamp without time zone);
create or replace function bench.f_sync_test() returns trigger language plpgsql as $body$
declare
  v_dst_server text := 'dst';
  v_conn_name text := v_dst_server;
  v_conn_status text;
  v_nsp_name name := tg_table_schema;
  v_table_name name := tg_table_name;
  v_dst_nsp_name name := tg_table_schema;
  v_dst_table_name name := tg_table_name;
  v_query text;
  v_query_upd1 text;
  v_query_upd2 text;
  v_dst_query text;
  v_dst_query_upd1 text;
  v_dst_query_upd2 text;
  v_pk_vector int2vector;
  v_pk_cnt int;
  v_pk_att_vals_array text[];
  v_exec_status text;
  v_application_name text;
  v_pg_backend_pid int;
begin
  select pg_backend_pid() into v_pg_backend_pid;
  select application_name into v_application_name from pg_stat_activity where pid = v_pg_backend_pid;
  if (v_application_name = 'aaa_bbb_digoal') then
    return null;
  end if;
  v_pk_vector := int2vector '1 2';
  v_pk_cnt := 2;
  case tg_op
  when 'INSERT' then
    v_pk_att_vals_array := ('{'||new.pk1||','||new.pk2||'}')::text[];
    select * into v_query from dblink_build_sql_insert(v_nsp_name||'.'||v_table_name, v_pk_vector, v_pk_cnt, v_pk_att_vals_array, v_pk_att_vals_array);
  when 'DELETE' then
    v_pk_att_vals_array := ('{'||old.pk1||','||old.pk2||'}')::text[];
    select * into v_query from dblink_build_sql_delete(v_nsp_name||'.'||v_table_name, v_pk_vector, v_pk_cnt, v_pk_att_vals_array);
  when 'UPDATE' then
    v_pk_att_vals_array := ('{'||old.pk1||','||old.pk2||'}')::text[];
    select * into v_query_upd1 from dblink_build_sql_delete(v_nsp_name||'.'||v_table_name, v_pk_vector, v_pk_cnt, v_pk_att_vals_array);
    v_pk_att_vals_array := ('{'||new.pk1||','||new.pk2||'}')::text[];
    select * into v_query_upd2 from dblink_build_sql_insert(v_nsp_name||'.'||v_table_name, v_pk_vector, v_pk_cnt, v_pk_att_vals_array, v_pk_att_vals_array);
  when 'TRUNCATE' then
    v_query := 'truncate table only '||v_nsp_name||'.'||v_table_name;
  end case;
  case tg_op
  when 'UPDATE' then
    v_dst_query_upd1 := regexp_replace(v_query_upd1, v_nsp_name||'.'||v_table_name, v_dst_nsp_name||'.'||v_dst_table_name, '');
    v_dst_query_upd2 := regexp_replace(v_query_upd2, v_nsp_name||'.'||v_table_name, v_dst_nsp_name||'.'||v_dst_table_name, '');
    v_dst_query := v_dst_query_upd1||';'||v_dst_query_upd2;
  else
    v_dst_query := regexp_replace(v_query, v_nsp_name||'.'||v_table_name, v_dst_nsp_name||'.'||v_dst_table_name, '');
  end case;
  if (dblink_get_connections() @> ('{'||v_conn_name||'}')::text[]) then
  else
    select * into v_conn_status from dblink_connect(v_conn_name, v_dst_server);
  end if;
  select * into v_exec_status from dblink_exec(v_conn_name, v_dst_query, false);
  if (v_exec_status = 'ERROR') then
    insert into bench.sync_err_rec (nsp_name, table_name, dst_server, dst_query, create_time)
      values (v_nsp_name, v_table_name, v_dst_server, v_dst_query, clock_timestamp());
  end if;
  return null;
exception
when others then
  raise notice 'v_conn_status:%, v_exec_status:%.', v_conn_status, v_exec_status;
  insert into bench.sync_err_rec (nsp_name, table_name, dst_server, dst_query, create_time)
    values (v_nsp_name, v_table_name, v_dst_server, v_dst_query, clock_timestamp());
  return null;
end;
$body$;
create trigger t_sync_dml after delete or update or insert on bench.t for each row execute procedure bench.f_sync_test();
create trigger t_sync_truncate after truncate on bench.t for each statement execute procedure bench.f_sync_test();
create trigger w5_sync_dml after delete or update or insert on bench.w5 for each row execute procedure bench.f_sync_test();
create trigger w5_sync_truncate after truncate on bench.w5 for each statement execute procedure bench.f_sync_test();
