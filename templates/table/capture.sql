{#- Capture: statement-level triggers with transition tables queue each statement's rows in one
    set-based insert, one row image per peer, in the writing transaction. -#}
{%- macro image(alias) -%}
jsonb_object(array[{% for c in columns %}{{ c.name | ql }}{% if not loop.last %}, {% endif %}{% endfor %}], array[{% for c in columns %}{{ alias | qi }}.{{ c.name | qi }}::text{% if not loop.last %}, {% endif %}{% endfor %}])
{%- endmacro -%}
{%- macro key(alias) -%}
row({% for c in key_columns %}{{ alias | qi }}.{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro -%}
{#- For tables whose conflict rule compares versions: record this node as the writer of each key. -#}
{%- macro track_open() -%}
{% if versioned %}with q as ({% endif %}
{%- endmacro -%}
{%- macro track_close() -%}
{% if versioned %}
    returning peer, op, r, o, ts, n)
  insert into repctl.version as v (tbl, k, origin, ts, n)
  select {{ name | ql }}, coalesce(q.r, q.o) - {{ non_key_columns | ql }}::text[], {{ node | ql }},
         {% if conflict_column %}case when q.op = 'D' then q.ts else coalesce((q.r ->> {{ conflict_column | ql }})::timestamptz, q.ts) end{% else %}q.ts{% endif %}, coalesce(q.n, 0)
    from q where q.peer = (select min(name) from repctl.peer){% if delta_columns %}
     -- A change that only increments delta columns has no version: every node adds it up.
     and (q.op <> 'U' or q.r - {{ delta_columns | map(attribute="name") | list | ql }}::text[]
                         is distinct from q.o - {{ delta_columns | map(attribute="name") | list | ql }}::text[]){% endif %}
  on conflict (tbl, k) do update set origin = excluded.origin, ts = excluded.ts, n = excluded.n
{% endif %}
{%- endmacro -%}
{#- node-priority: the count of the version a change writes, one more than the key's here. -#}
{%- macro count_column() -%}
{% if conflict == "node-priority" %}, n{% endif %}
{%- endmacro -%}
{#- The image is the first non-null of `column` of `aliases`. -#}
{%- macro count_of(aliases, column) -%}
{% if conflict == "node-priority" %},
           (select coalesce(max(v.n), 0) + 1 from repctl.version as v
             where v.tbl = {{ name | ql }}
               and v.k = coalesce({% for a in aliases %}{{ a | qi }}.{{ column | qi }}{% if not loop.last %}, {% endif %}{% endfor %}) - {{ non_key_columns | ql }}::text[]){% endif %}
{%- endmacro -%}
{#- The transition table `rows`, or with none the table itself, as far as --where takes it. -#}
{%- macro filtered(rows) -%}
{% if rows %}{% set from = rows | qi %}{% else %}{% set from = table %}{% endif %}
{% if where %}(select * from {{ from }} where ({{ where }})){% else %}{{ from }}{% endif %}
{%- endmacro -%}
{#- A delete of each of `rows` (see filtered). -#}
{%- macro queue_deletes(rows) -%}
{{ track_open() }}insert into repctl.queue (peer, tbl, op, o{{ count_column() }})
    select p.name, {{ name | ql }}, 'D', c.o{{ count_of(["c"], "o") }}
      from (select {{ image("o") }} as o from {{ filtered(rows) }} o) c
     cross join repctl.peer p
{{ track_close() }}
{%- endmacro -%}
{%- set hold_limit = 100 -%}
{#- Whether the capture holds a transaction's first changes (see hold). Not a table whose rule
    compares versions (they are recorded as the changes queue), nor one with delta columns or an
    append-only one (the peer records a flush of them by their queue seqs, see repctl.unapplied). -#}
{%- set holds = mode == "sync" and not versioned and not delta_columns and not append_only -%}
{#- Appends the changes c(op, r, o) of the subquery that follows to what the transaction holds (the
    payload's field lists, json text, comma-separated; see repctl.spill), in one statement of the
    capture itself: a call of a SQL function doing it cost twice as much (its body planned per call). -#}
{%- macro hold() -%}
perform set_config('repctl.held_n', (coalesce(nullif(current_setting('repctl.held_n', true), ''), '0')::integer + h.n)::text, true),
                set_config('repctl.held_t', concat_ws(',', nullif(current_setting('repctl.held_t', true), ''), h.t), true),
                set_config('repctl.held_op', concat_ws(',', nullif(current_setting('repctl.held_op', true), ''), h.op), true),
                set_config('repctl.held_r', concat_ws(',', nullif(current_setting('repctl.held_r', true), ''), h.r), true),
                set_config('repctl.held_o', concat_ws(',', nullif(current_setting('repctl.held_o', true), ''), h.o), true){% if on_peer_failure == "error" %},
                -- --on-peer-failure error: a peer's failure fails this transaction.
                set_config('repctl.held_strict', 'on', true){% endif %}

          from (select count(*) as n, string_agg(to_json({{ name | ql }}::text)::text, ',') as t, string_agg(to_json(c.op)::text, ',') as op,
                       string_agg(coalesce(c.r::text, 'null'), ',') as r, string_agg(coalesce(c.o::text, 'null'), ',') as o
                  from
{%- endmacro -%}
-- Capture for {{ name | ql }} on node {{ node | ql }} ({{ mode | ql }} mode).
create or replace function repctl.{{ capture_fn | qi }}() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
{% include "table/text_settings.sql" %}
{% include "plan_settings.sql" %}
as $fn$
{% if holds %}declare
  v_room integer;
  v_small boolean;
{% endif %}begin
{% if append_only %}
  -- Before the statement: a row of a table without a key cannot be found on the other nodes.
  if tg_op <> 'INSERT' then
    raise exception 'repctl: % of % is refused on node %: it is replicated append-only (it has no key by which the other nodes could find a row, so only inserts replicate)',
      tg_op, {{ name | ql }}, {{ node | ql }}
      using errcode = 'feature_not_supported',
            hint = 'give the table a primary key on every node and replicate it again (repctl remove-table, then add-table without --append-only)';
  end if;
{% endif %}
  -- Changes applied from a peer are not sent on (no loops, for any number of nodes).
  if current_setting({{ applying_setting | ql }}, true) = 'on' then
    return null;
  end if;
{% if mode == "sync" %}
  -- Asks for a flush at commit (once per transaction), before queueing anything.
  if current_setting('repctl.flush_armed', true) is distinct from 'on' then
    perform repctl.arm_flush();
  end if;
{% if holds %}
  -- The first {{ hold_limit }} changes of a transaction that has queued nothing are held in it
  -- (hold) and sent at commit without passing through the queue.
  if tg_op <> 'TRUNCATE' and current_setting('repctl.queued', true) is distinct from 'on' then
    v_room := greatest({{ hold_limit }} - coalesce(nullif(current_setting('repctl.held_n', true), ''), '0')::integer, 0);
    if tg_op = 'DELETE' then
      v_small := not exists (select from old_rows offset v_room);
    else
      v_small := not exists (select from new_rows offset v_room);
    end if;
    if v_small then
      if tg_op = 'INSERT' then
        {{ hold() }} (select 'I' as op, {{ image("n") }} as r, null::jsonb as o from {{ filtered("new_rows") }} n) c) h
         where h.n > 0;
      elsif tg_op = 'UPDATE' then
        {{ hold() }} (select case when o.r is null then 'I' when n.r is null then 'D' else 'U' end as op, n.r, o.r as o
                          from (select {{ key("n") }} as k, {{ image("n") }} as r from {{ filtered("new_rows") }} n) n
                          full join (select {{ key("o") }} as k, {{ image("o") }} as r from {{ filtered("old_rows") }} o) o on n.k = o.k
                         where n.r is distinct from o.r) c) h
         where h.n > 0;
      else
        {{ hold() }} (select 'D' as op, null::jsonb as r, {{ image("o") }} as o from {{ filtered("old_rows") }} o) c) h
         where h.n > 0;
      end if;
      return null;
    end if;
  end if;
{% endif %}
{% endif %}
  -- What this transaction holds goes into the queue before anything else of it.
  if current_setting('repctl.flush_armed', true) = 'on' then
    perform repctl.spill();
  end if;
  if tg_op = 'INSERT' then
    {{ track_open() }}insert into repctl.queue (peer, tbl, op, r{{ count_column() }})
    select p.name, {{ name | ql }}, 'I', c.r{{ count_of(["c"], "r") }}
      from (select {{ image("n") }} as r from {{ filtered("new_rows") }} n) c
     cross join repctl.peer p
{{ track_close() }};
{% if not append_only %}
  elsif tg_op = 'UPDATE' then
    -- Old and new rows pair up by key; a changed key is a delete of the old key and an insert of the new.
    {{ track_open() }}insert into repctl.queue (peer, tbl, op, r, o{{ count_column() }})
    select p.name, {{ name | ql }},
           case when o.r is null then 'I' when n.r is null then 'D' else 'U' end, n.r, o.r{{ count_of(["n", "o"], "r") }}
      from (select {{ key("n") }} as k, {{ image("n") }} as r from {{ filtered("new_rows") }} n) n
      full join (select {{ key("o") }} as k, {{ image("o") }} as r from {{ filtered("old_rows") }} o) o on n.k = o.k
     cross join repctl.peer p
     where n.r is distinct from o.r
{{ track_close() }};
  elsif tg_op = 'DELETE' then
    {{ queue_deletes("old_rows") }};
  else
{% if versioned %}
    -- Before the truncate, as a delete of every row: each then loses to a newer version of its
    -- key elsewhere, as any delete does, where a truncate on arrival would also remove rows
    -- written there since. The agent must be able to read the table (a superuser agent can).
    {{ queue_deletes(none) }};
{% else %}
    insert into repctl.queue (peer, tbl, op)
    select p.name, {{ name | ql }}, 'T' from repctl.peer p;
{% endif %}
{% endif %}
  end if;
{% if mode == "async" %}
  -- Wakes `repctl run` at commit (notifications of one transaction are folded into one).
  if found then
    perform pg_notify({{ notify_channel | ql }}, '');
  end if;
{% endif %}
  return null;
end
$fn$;
revoke all on function repctl.{{ capture_fn | qi }}() from public;

drop trigger if exists {{ capture_triggers.insert | qi }} on {{ table }};
create trigger {{ capture_triggers.insert | qi }} after insert on {{ table }}
  referencing new table as new_rows for each statement execute function repctl.{{ capture_fn | qi }}();
{% if append_only %}
drop trigger if exists {{ capture_triggers.update | qi }} on {{ table }};
create trigger {{ capture_triggers.update | qi }} before update on {{ table }}
  for each statement execute function repctl.{{ capture_fn | qi }}();
drop trigger if exists {{ capture_triggers.delete | qi }} on {{ table }};
create trigger {{ capture_triggers.delete | qi }} before delete on {{ table }}
  for each statement execute function repctl.{{ capture_fn | qi }}();
drop trigger if exists {{ capture_triggers.truncate | qi }} on {{ table }};
create trigger {{ capture_triggers.truncate | qi }} before truncate on {{ table }}
  for each statement execute function repctl.{{ capture_fn | qi }}();
{% else %}
drop trigger if exists {{ capture_triggers.update | qi }} on {{ table }};
create trigger {{ capture_triggers.update | qi }} after update on {{ table }}
  referencing old table as old_rows new table as new_rows for each statement execute function repctl.{{ capture_fn | qi }}();
drop trigger if exists {{ capture_triggers.delete | qi }} on {{ table }};
create trigger {{ capture_triggers.delete | qi }} after delete on {{ table }}
  referencing old table as old_rows for each statement execute function repctl.{{ capture_fn | qi }}();
drop trigger if exists {{ capture_triggers.truncate | qi }} on {{ table }};
create trigger {{ capture_triggers.truncate | qi }} {% if versioned %}before{% else %}after{% endif %} truncate on {{ table }}
  for each statement execute function repctl.{{ capture_fn | qi }}();
{% endif %}
