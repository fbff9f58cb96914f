{#- Included by node/init.sql: synchronous delivery at commit. -#}
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
  v_delta boolean;
  v_behind boolean;
  v_horizon xid8;
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
    -- Changes queued earlier for this peer go first (the seed's section 3 reordering). The same
    -- snapshot gives the oldest transaction still running: one older than that is over, and with
    -- nothing queued for the peer, none of its changes is (see repctl.apply).
    select exists (select from repctl.queue q where q.peer = v_peer.name and q.seq < v_from)
           or exists (select from repctl.queue q where q.peer = v_peer.name and q.seq > v_from and q.xid <> v_me),
           pg_snapshot_xmin(pg_current_snapshot())
      into v_behind, v_horizon;
    if v_behind then
      perform pg_notify({{ notify_channel | ql }}, v_peer.name);
      continue;
    end if;
    select repctl.changes_json(array_agg(q order by q.seq))::jsonb,
           array_agg(q.seq order by q.seq),
           bool_or(t.on_peer_failure = 'error'),
           bool_or(cardinality(t.delta_columns) > 0)
      into v_payload, v_seqs, v_strict, v_delta
      from repctl.queue q join repctl.tables t on t.name = q.tbl
     where q.peer = v_peer.name and q.seq > v_from and q.xid = v_me;
    continue when v_payload is null;
    if v_delta then
      -- The peer records this flush, so a drain of changes the peer applied does not apply their
      -- increments again should this side stop waiting for its answer.
      v_payload := v_payload || jsonb_build_object('x', v_me::text, 'h', v_horizon::text);
    end if;
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

