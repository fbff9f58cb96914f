{#- Apply: a batch of one table's consecutive changes, in origin order, in one statement. Only the
    last change per key decides the row, so replaying a batch, or part of one, ends in the same
    state. The first change per key says what the origin saw before it (its old row image); when
    this node's row is neither that nor the final state, two nodes changed the same row: the
    table's conflict rule decides, and the conflict is recorded in repctl.conflict. -#}
{%- macro keys(alias) -%}
{% for c in key_columns %}{% if alias %}{{ alias | qi }}.{% endif %}{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{%- macro typed_key(alias) -%}
{% for c in key_column_types %}({{ alias | qi }}.k ->> {{ c.name | ql }})::{{ c.type }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{%- macro image(alias) -%}
jsonb_object(array[{% for c in columns %}{{ c.name | ql }}{% if not loop.last %}, {% endif %}{% endfor %}], array[{% for c in columns %}{{ alias | qi }}.{{ c.name | qi }}::text{% if not loop.last %}, {% endif %}{% endfor %}])
{%- endmacro -%}
-- Apply for {{ name | ql }} on node {{ node | ql }} (conflicts: {{ conflict | ql }}).
create or replace function repctl.{{ apply_fn | qi }}(p_changes jsonb, p_truncate boolean, p_origin text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
{% include "table/text_settings.sql" %}
-- Transition tables have no statistics; the planner's guesses must not buy a JIT compile per statement.
set jit = off
as $fn$
begin
  if p_truncate then
{% if where %}
    delete from {{ table }} where ({{ where }});
{% else %}
    truncate only {{ table }};
{% endif %}
    return;
  end if;
  with ev as (
    select (c ->> 's')::bigint as s, c ->> 'op' as op, c -> 'r' as r, c -> 'o' as o, (c ->> 'resolved')::boolean as resolved,
           {% if conflict_column %}case when c ->> 'op' = 'D' then (c ->> 'ts')::timestamptz
                else coalesce((c -> 'r' ->> {{ conflict_column | ql }})::timestamptz, (c ->> 'ts')::timestamptz) end{% else %}(c ->> 'ts')::timestamptz{% endif %} as ts,
           case when c ->> 'op' = 'D' then c -> 'o' else c -> 'r' end - {{ non_key_columns | ql }}::text[] as k
      from jsonb_array_elements(p_changes) as c
  ), batch as (
    -- Per key: what the origin started from (first change) and where it ended (last change), in
    -- one sort of the batch.
    select w.k, w.first_op, w.first_o, w.op = 'D' as del, w.r as img, w.ts, w.any_resolved as resolved
      from (select ev.*, first_value(ev.op) over k as first_op, first_value(ev.o) over k as first_o,
                   bool_or(ev.resolved) over k as any_resolved, row_number() over k as pos, count(*) over k as n
              from ev window k as (partition by ev.k order by ev.s rows between unbounded preceding and unbounded following)) as w
     where w.pos = w.n
  ), here as materialized (
    -- Materialized: the judgement below reads cur several times, one index probe per key is enough.
    select b.*, (select {{ image("t") }} from {{ table }} as t where ({{ keys("t") }}) = ({{ typed_key("b") }})) as cur
      from batch as b
  ), judged as (
    select h.*, case
        when h.resolved then null
        when h.first_op = 'I' then case when h.cur is not null and h.cur is distinct from h.img then 'insert_exists' end
        when h.cur is null then case when h.first_op = 'U' then 'update_missing' else 'delete_missing' end
        when h.cur is distinct from h.first_o and h.cur is distinct from h.img then
          case when h.first_op = 'U' then 'update_differs' else 'delete_differs' end
      end as conflict
      from here as h
  ), decided as (
    select j.*, case
        when j.conflict is null or j.conflict = 'delete_missing' then true
{% if conflict == "error" %}
        else repctl.conflict_error({{ name | ql }}, p_origin, j.conflict, j.k, j.cur, j.first_o, case when j.del then null else j.img end)
{% elif conflict == "origin-wins" %}
        else true
{% elif conflict == "target-wins" %}
        else false
{% else %}
{% if conflict == "node-priority" %}
        -- The origin listed first wins; the same node, or both unlisted: the newer version.
        when coalesce(array_position({{ node_priority | ql }}::text[], p_origin), 2147483647)
             <> coalesce(array_position({{ node_priority | ql }}::text[], coalesce(v.origin, {{ node | ql }})), 2147483647)
          then coalesce(array_position({{ node_priority | ql }}::text[], p_origin), 2147483647)
             < coalesce(array_position({{ node_priority | ql }}::text[], coalesce(v.origin, {{ node | ql }})), 2147483647)
{% endif %}
        -- The newer version wins; equal times go to the node whose name sorts first.
        else j.ts > coalesce(v.ts, '-infinity')
          or (j.ts = coalesce(v.ts, '-infinity') and p_origin < coalesce(v.origin, {{ node | ql }}))
{% endif %}
      end as wins
      from judged as j
{% if versioned %}
      left join repctl.version as v on v.tbl = {{ name | ql }} and v.k = j.k
{% endif %}
  ), logged as (
    insert into repctl.conflict (tbl, k, kind, origin, local_row, remote_row, rule, winner)
    select {{ name | ql }}, d.k, d.conflict, p_origin, d.cur, case when d.del then null else d.img end, {{ conflict | ql }},
           case when d.wins then p_origin else {{ node | ql }} end
      from decided as d where d.conflict is not null
{% if conflict == "origin-wins" or conflict == "target-wins" %}
  ), superseded as (
    -- This node's own pending changes of a conflicting key are superseded by the resolution: sent
    -- as they are, they would start the conflict over on the origin.
    delete from repctl.queue as q using decided as d
     where d.conflict is not null and d.conflict <> 'delete_missing' and q.peer = p_origin
       and q.tbl = {{ name | ql }} and coalesce(q.r, q.o) - {{ non_key_columns | ql }}::text[] = d.k
{% endif %}
{% if conflict == "target-wins" %}
  ), resent as (
    -- This node kept its row: send it back, as a resolution the origin applies without a check.
    insert into repctl.queue (peer, tbl, op, r, o, resolved)
    select p_origin, {{ name | ql }}, case when d.cur is null then 'D' else 'U' end, d.cur, coalesce(d.cur, d.k), true
      from decided as d where d.conflict is not null and d.conflict <> 'delete_missing' and not d.wins
{% endif %}
{% if versioned %}
  ), versions as (
    insert into repctl.version as v (tbl, k, origin, ts)
    select {{ name | ql }}, d.k, p_origin, d.ts from decided as d where d.wins
    on conflict (tbl, k) do update set origin = excluded.origin, ts = excluded.ts
{% endif %}
  ), deleted as (
    delete from {{ table }} as t using decided as d
     where d.wins and d.del and ({{ keys("t") }}) = ({{ typed_key("d") }})
  )
  insert into {{ table }} as t ({% for c in columns %}{{ c.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %})
{% if overriding %}
  overriding system value
{% endif %}
  select {% for c in columns %}(d.img ->> {{ c.name | ql }})::{{ c.type }}{% if not loop.last %}, {% endif %}{% endfor +%}
    from decided as d where d.wins and not d.del
{% if update_columns %}
  on conflict ({{ keys("") }}) do update set
{% for c in update_columns %}
    {{ c | qi }} = excluded.{{ c | qi }}{% if not loop.last %},{% endif +%}
{% endfor %}
{% else %}
  on conflict ({{ keys("") }}) do nothing
{% endif %}
  ;
{% if conflict == "target-wins" %}
  -- Wakes `repctl run` here to send the kept rows back.
  if exists (select from repctl.queue where peer = p_origin and resolved and xid = pg_current_xact_id()) then
    perform pg_notify('repctl', p_origin);
  end if;
{% endif %}
end
$fn$;
revoke all on function repctl.{{ apply_fn | qi }}(jsonb, boolean, text) from public;
