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

-- How many changes this transaction holds (see repctl.spill). PL/pgSQL, as flush_statement: a SQL
-- function with a pinned search_path is not inlined, and its body was parsed and planned at every
-- call (with flush_statement, a seventh of a synchronous commit's CPU on the origin).
create or replace function repctl.held_count() returns integer
language plpgsql stable set search_path = pg_catalog as $fn$
begin
  return coalesce(nullif(current_setting('repctl.held_n', true), ''), '0')::integer;
end
$fn$;

-- Synchronous mode holds a transaction's first changes in the transaction itself (transaction-local
-- settings, which a rollback, or one to a savepoint, undoes like the rows), not in the queue: at
-- commit the flush sends them as they are, and only a peer that does not take them gets them
-- queued. A commit that delivers thus writes and deletes no queue row: no dead rows for the next
-- commit's "anything older queued?" to walk, and nothing to read back. Held as the payload's
-- field lists (json text, comma-separated): the table, op, new and old image of each change, in
-- repctl.held_t, _op, _r and _o, their number in repctl.held_n (the capture appends to them).

-- Queues what this transaction holds: for peer p_peer (a flush it failed), or for every peer
-- before the transaction queues anything else (then everything after it queues too, in order,
-- and the flush ships the transaction from the queue).
create or replace function repctl.spill(p_peer text default null) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
begin
  if repctl.held_count() > 0 then
    insert into repctl.queue (peer, tbl, op, r, o)
    select p.name, c.t, c.op, nullif(c.r, 'null'), nullif(c.o, 'null')
      from rows from (jsonb_array_elements_text(('[' || current_setting('repctl.held_t') || ']')::jsonb),
                      jsonb_array_elements_text(('[' || current_setting('repctl.held_op') || ']')::jsonb),
                      jsonb_array_elements(('[' || current_setting('repctl.held_r') || ']')::jsonb),
                      jsonb_array_elements(('[' || current_setting('repctl.held_o') || ']')::jsonb))
           with ordinality as c(t, op, r, o, ord)
     cross join repctl.peer p
     where p_peer is null or p.name = p_peer
     order by c.ord, p.name;
  end if;
  if p_peer is null then
    perform repctl.held_reset();
  end if;
end
$fn$;

-- Drops what this transaction holds (queued or delivered): whatever it writes next is queued.
create or replace function repctl.held_reset() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
begin
  if repctl.held_count() > 0 or current_setting('repctl.queued', true) is distinct from 'on' then
    perform set_config('repctl.held_n', '0', true);
    perform set_config('repctl.held_t', '', true);
    perform set_config('repctl.held_op', '', true);
    perform set_config('repctl.held_r', '', true);
    perform set_config('repctl.held_o', '', true);
    perform set_config('repctl.queued', 'on', true);
  end if;
end
$fn$;

-- The statement a flush sends a peer: repctl.apply of the payload, through the statement the
-- flush prepared on that connection, the payload dollar-quoted (no re-quoting of every
-- character) unless it holds the quote's tag.
create or replace function repctl.flush_statement(p_origin text, p_payload text) returns text
language plpgsql immutable set search_path = pg_catalog as $fn$
begin
  return format('execute repctl_apply(%L, %s)', p_origin,
                case when strpos(p_payload, '$repctl$') = 0 then '$repctl$' || p_payload || '$repctl$'
                     else quote_literal(p_payload) end);
end
$fn$;

-- Runs at commit (deferred constraint trigger): ships this transaction's changes to each peer in one
-- round trip, unless older changes wait for that peer; a peer that fails keeps them queued.
create or replace function repctl.flush() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
{% include "plan_settings.sql" %}
as $fn$
declare
  v_me xid8 := pg_current_xact_id();
  v_origin text := {{ node | ql }};
  v_peer record;
  v_held integer := repctl.held_count();
  -- Everything this transaction wrote is held (the fast path), or it queued some (see repctl.spill).
  v_from_queue boolean := current_setting('repctl.queued', true) is not distinct from 'on';
  v_payload text;
  v_count integer;
  v_seqs bigint[];
  v_strict boolean;
  v_delta boolean;
  v_behind boolean;
  v_horizon xid8;
  v_conn text;
  v_deadline timestamptz;
  -- How long this session's flushes poll without sleeping (see the wait below), in microseconds;
  -- at or below 0, a count of flushes since the last probe.
  v_spin integer := coalesce(nullif(current_setting('repctl.flush_spin', true), '')::integer, 300);
  v_budget integer;
  v_sent timestamptz;
  v_spin_until timestamptz;
  v_slept boolean;
  v_from bigint := current_setting('repctl.flush_from')::bigint;
begin
  delete from repctl.flush_request where xid = v_me;
  -- SERIALIZABLE commits can still fail after this point; their changes wait for a drain instead.
  if current_setting('transaction_isolation') = 'serializable' then
    perform repctl.spill();
    return null;
  end if;
  -- A flush that fires early (SET CONSTRAINTS ALL IMMEDIATE: at the end of the statement that
  -- armed it) leaves the rest of the transaction queued: what it holds is delivered or queued
  -- by the end of this flush, and nothing flushes again.
  perform set_config('repctl.queued', 'on', true);
  if not v_from_queue then
    if v_held = 0 then
      return null;
    end if;
    v_payload := format('{"s":%s,"t":[%s],"op":[%s],"r":[%s],"o":[%s]}', array_to_json(array(select generate_series(1, v_held))),
                        current_setting('repctl.held_t'), current_setting('repctl.held_op'),
                        current_setting('repctl.held_r'), current_setting('repctl.held_o'));
    v_count := v_held;
    v_strict := current_setting('repctl.held_strict', true) is not distinct from 'on';
  end if;
  for v_peer in select name, server, counter from repctl.peer order by name loop
    if v_from_queue then
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
      select repctl.changes_json(array_agg(q order by q.seq)),
             array_agg(q.seq order by q.seq),
             bool_or(t.on_peer_failure = 'error'),
             bool_or(cardinality(t.delta_columns) > 0 or t.append_only)
        into v_payload, v_seqs, v_strict, v_delta
        from repctl.queue q join repctl.tables t on t.name = q.tbl
       where q.peer = v_peer.name and q.seq > v_from and q.xid = v_me;
      continue when v_payload is null;
      if v_delta then
        -- The peer records this flush, so a drain of changes the peer applied does not apply their
        -- increments (or an append-only table's rows) again should this side stop waiting for its
        -- answer. (Such tables never hold their changes: see the capture.)
        v_payload := (v_payload::jsonb || jsonb_build_object('x', v_me::text, 'h', v_horizon::text))::text;
      end if;
      v_count := cardinality(v_seqs);
    elsif exists (select from repctl.queue q where q.peer = v_peer.name) then
      -- Anything queued for this peer (nothing this transaction wrote is): it goes first.
      perform repctl.spill(v_peer.name);
      perform pg_notify({{ notify_channel | ql }}, v_peer.name);
      continue;
    end if;
    -- The server name is derived to fit in 63 bytes, as dblink's connection names must.
    v_conn := v_peer.server;
    begin
      if not coalesce(v_conn = any ({{ dblink_schema | qi }}.dblink_get_connections()), false) then
        perform repctl.peer_answers(v_peer.server);
        perform {{ dblink_schema | qi }}.dblink_connect(v_conn, v_peer.server);
        -- Two nodes flushing changes to the same row at once wait on each other's row locks (each
        -- holds the row its own commit is flushing): after this the apply gives up, its
        -- transaction's changes queue, and both writers go on.
        perform {{ dblink_schema | qi }}.dblink_exec(v_conn, format('set lock_timeout = %L', {{ flush_lock_timeout | ql }}));
        -- The peer gives up on an apply when this side stops waiting for it; otherwise it could
        -- still commit (harmless: the changes stay queued and apply idempotently) while holding
        -- the rows' locks against the drain that delivers them.
        perform {{ dblink_schema | qi }}.dblink_exec(v_conn,
          format('set statement_timeout = %L', (extract(epoch from {{ flush_timeout | ql }}::interval) * 1000)::bigint));
        -- Planned once per connection, not per commit; marks the apply as a flush (see repctl.apply).
        perform {{ dblink_schema | qi }}.dblink_exec(v_conn, format(
          'prepare repctl_apply(text, jsonb) as select repctl.apply($1, $2) from pg_catalog.set_config(%L, ''on'', true)',
          {{ flushing_setting | ql }}));
      end if;
      -- Sent asynchronously and awaited with a deadline: a peer that stops answering (frozen,
      -- network gone) must not hang the writer's commit. dblink itself would wait forever.
      perform {{ dblink_schema | qi }}.dblink_send_query(v_conn, repctl.flush_statement(v_origin, v_payload));
      v_deadline := clock_timestamp() + {{ flush_timeout | ql }}::interval;
      -- A blocking wait would take one wake-up when the answer arrives, but nothing bounds it at
      -- commit (no statement_timeout runs there, and a frozen peer's kernel still acknowledges what
      -- is sent). So the answer is polled: first without sleeping, for as long as this session's
      -- recent answers say is worth it, then in sleeps of pg_sleep's least, one 1 ms tick (asked
      -- for 0.5 ms; asked for 1 ms it often waits two, 2.1 ms on average, measured). On idle cores
      -- a one-row apply answers within a tick (0.7-0.9 ms here); with more writers than cores,
      -- polling burns the CPU the peers' applies need and the answers come later. The budget
      -- adapts: twice the last answer's time when it came within the budget (0.2 ms to 1 ms),
      -- halved after one that needed a sleep, and once at 0 a probe of 1 ms every 16 flushes.
      v_budget := case when v_spin > 0 then v_spin when v_spin <= -16 then 1000 else 0 end;
      v_sent := clock_timestamp();
      v_spin_until := v_sent + make_interval(secs => v_budget / 1e6);
      v_slept := false;
      while {{ dblink_schema | qi }}.dblink_is_busy(v_conn) = 1 loop
        continue when clock_timestamp() < v_spin_until;
        if clock_timestamp() > v_deadline then
          raise exception 'no answer within %', {{ flush_timeout | ql }};
        end if;
        v_slept := true;
        perform pg_sleep(0.0005);
      end loop;
      v_spin := case when not v_slept
                       then least(greatest(2 * extract(epoch from clock_timestamp() - v_sent) * 1e6, 200), 1000)::integer
                     when v_spin > 0 then v_spin / 2 when v_spin <= -16 then 0 else v_spin - 1 end;
      perform set_config('repctl.flush_spin', v_spin::text, false);
      perform from {{ dblink_schema | qi }}.dblink_get_result(v_conn) as applied(n integer);
      -- The empty result that frees the connection for the next query.
      perform from {{ dblink_schema | qi }}.dblink_get_result(v_conn) as done(n integer);
      if v_from_queue then
        -- The rows shipped are this transaction's in that range. Not `seq = any (v_seqs)`: the
        -- planner may make that a filter, a scan of the whole array per row (20 s for 100,000 rows).
        delete from repctl.queue
         where peer = v_peer.name and seq between v_seqs[1] and v_seqs[cardinality(v_seqs)] and xid = v_me;
        update repctl.delivery set last_delivery = now(), delivered = delivered + v_count where peer = v_peer.name;
      else
        -- Counted without a row lock that every synchronous commit would queue on (see lag).
        perform nextval(format('repctl.%I', v_peer.counter)::regclass) from generate_series(1, v_count);
      end if;
    exception when others then
      if coalesce(v_conn = any ({{ dblink_schema | qi }}.dblink_get_connections()), false) then
        perform {{ dblink_schema | qi }}.dblink_disconnect(v_conn);
      end if;
      if not v_from_queue then
        perform repctl.spill(v_peer.name);
      end if;
      perform pg_notify({{ notify_channel | ql }}, v_peer.name);
      if v_strict then
        raise exception 'repctl: peer % did not take this transaction''s changes: %', v_peer.name, sqlerrm
          using hint = 'the table is set to --on-peer-failure error; the local write is rolled back';
      end if;
      raise warning 'repctl: peer % did not take % change(s), kept in its queue: %',
        v_peer.name, v_count, sqlerrm;
    end;
  end loop;
  perform set_config('repctl.held_n', '0', true);
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

