{#- Apply: a batch of one table's consecutive changes, in origin order, in one statement. Only the
    last change per key decides the row, so replaying a batch, or part of one, ends in the same
    state. The first change per key says what the origin saw before it (its old row image); when
    this node's row is neither that nor the final state, two nodes changed the same row: the
    table's conflict rule decides, and the conflict is recorded in repctl.conflict. -#}
{%- macro keys(alias) -%}
{% for c in key_columns %}{% if alias %}{{ alias | qi }}.{% endif %}{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{#- The key columns of the key image (or row image) `image` of alias, typed; named as the columns with `named`. -#}
{%- macro typed_key(alias, named=false, image="k") -%}
{% for c in key_column_types %}({{ alias | qi }}.{{ image | qi }} ->> {{ c.name | ql }})::{{ c.type }}{% if named %} as {{ c.name | qi }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{#- The key image of change c: of its old row for a delete, of its new row else. -#}
{%- macro change_key(c) -%}
case when {{ c | qi }}.op = 'D' then {{ c | qi }}.o else {{ c | qi }}.r end - {{ non_key_columns | ql }}::text[]
{%- endmacro -%}
{%- macro insert_into() -%}
    insert into {{ table }} as t ({% for c in columns %}{{ c.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %}){% if overriding %} overriding system value{% endif %}
{%- endmacro -%}
{#- A column added by alter-table --ddl that an image from before lacks takes its default here. -#}
{%- macro insert_rows(alias, image) -%}
{{ insert_into() }}
  select {% for c in columns %}{% if c.default %}case when {{ alias | qi }}.{{ image | qi }} ? {{ c.name | ql }} then ({{ alias | qi }}.{{ image | qi }} ->> {{ c.name | ql }})::{{ c.type }} else {{ c.default }} end{% else %}({{ alias | qi }}.{{ image | qi }} ->> {{ c.name | ql }})::{{ c.type }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor +%}
{%- endmacro -%}
{#- An image queued before alter-table --ddl renamed or dropped columns, in today's shape: renamed
    columns under their new names, dropped ones left out (a delete's new image is json null). -#}
{%- macro reshaped(alias, image) -%}
{% if former_names %}case when jsonb_typeof({{ alias | qi }}.{{ image | qi }}) = 'object' then ({{ alias | qi }}.{{ image | qi }} - {{ former_names | ql }}::text[]){% for f in renames %} || case when {{ alias | qi }}.{{ image | qi }} ? {{ f.old | ql }} then jsonb_build_object({{ f.new | ql }}, {{ alias | qi }}.{{ image | qi }} -> {{ f.old | ql }}) else '{}' end{% endfor %} else {{ alias | qi }}.{{ image | qi }} end{% else %}{{ alias | qi }}.{{ image | qi }}{% endif %}
{%- endmacro -%}
{#- The batch's row images (all inserts), inserted. -#}
{%- macro insert_images() -%}
{{ insert_rows("e", "r") }}
    from {% if former_names %}(select {{ reshaped("e", "r") }} as r from jsonb_array_elements(p_changes -> 'r') as e(r)) as e{% else %}jsonb_array_elements(p_changes -> 'r') as e(r){% endif %}
{%- endmacro -%}
{%- macro insert_values(alias) -%}
{{ insert_into() }}
  select {% for c in columns %}{{ alias | qi }}.{{ c.name | qi }}::{{ c.type }}{% if not loop.last %}, {% endif %}{% endfor +%}
{%- endmacro -%}
{%- macro column_arrays(with_ts) -%}
{#- Set-returning functions in the select list run in step, one row each per call; in a FROM list
    (rows from) each would first fill a tuplestore with the whole column. -#}
(select {% for c in columnar %}unnest(p_values[{{ loop.index }}:{{ loop.index }}]) as {{ c.name | qi }}{% if not loop.last or with_ts %}, {% endif %}{% endfor %}{% if with_ts %}jsonb_array_elements_text(p_changes -> 'ts') as {{ ts_alias | qi }}{% endif %}) as v
{%- endmacro -%}
{%- macro insert_decided(existing) -%}
{{ insert_rows("d", "img") }}
    from decided as d where d.wins and not d.del and d.cur is {% if existing %}not {% endif %}null
{%- endmacro -%}
{%- macro version_ts(c) -%}
{% if conflict_column %}case when {{ c | qi }}.op = 'D' then {{ c | qi }}.ts::timestamptz
                else coalesce(({{ c | qi }}.r ->> {{ conflict_column | ql }})::timestamptz, {{ c | qi }}.ts::timestamptz) end{% else %}{{ c | qi }}.ts::timestamptz{% endif %}
{%- endmacro -%}
{#- An image less its delta columns. -#}
{%- macro less_delta(a, image) -%}
({{ a | qi }}.{{ image | qi }} - {{ delta_columns | map(attribute="name") | list | ql }}::text[])
{%- endmacro -%}
{#- Whether the origin decided column `c` of the key in alias `a` (see batch). -#}
{%- macro decides(a, c) -%}
{% if merge_columns %}({{ a | qi }}.renewed or ({{ a | qi }}.img -> {{ c | ql }}) is distinct from ({{ a | qi }}.first_o -> {{ c | ql }})){% else %}{{ a | qi }}.nchanged{% endif %}
{%- endmacro -%}
{#- Whether this node changed what the origin decided, to something else than the origin did. -#}
{%- macro decided_conflict(a) -%}
{% if merge_columns %}{% for c in plain_columns %}({{ decides(a, c) }} and ({{ a | qi }}.cur -> {{ c | ql }}) is distinct from ({{ a | qi }}.img -> {{ c | ql }})
             and (({{ a | qi }}.cur -> {{ c | ql }}) is distinct from ({{ a | qi }}.first_o -> {{ c | ql }}){% if conflict in ["origin-wins", "target-wins"] %} or {{ a | qi }}.pending{% endif %})) or {% endfor %}false{% else %}{% if conflict in ["origin-wins", "target-wins"] %}{{ a | qi }}.pending or {% endif %}({{ less_delta(a, "cur") }} is distinct from {{ less_delta(a, "first_o") }}
             and {{ less_delta(a, "cur") }} is distinct from {{ less_delta(a, "img") }}){% endif %}
{%- endmacro -%}
{#- The conflict a change of the key makes when this node changed the key too, by the change's shape. -#}
{%- macro shape_kind(alias) -%}
case when {{ alias | qi }}.first_op = 'I' then 'insert_exists'
           when {{ alias | qi }}.cur is null then case when {{ alias | qi }}.first_op = 'U' then 'update_missing' else 'delete_missing' end
           when {{ alias | qi }}.first_op = 'U' then 'update_differs' else 'delete_differs' end
{%- endmacro -%}
{%- macro image(alias, of) -%}
jsonb_object(array[{% for c in of %}{{ c.name | ql }}{% if not loop.last %}, {% endif %}{% endfor %}], array[{% for c in of %}{{ alias | qi }}.{{ c.name | qi }}::text{% if not loop.last %}, {% endif %}{% endfor %}])
{%- endmacro -%}
-- Apply for {{ name | ql }} on node {{ node | ql }} (conflicts: {{ conflict | ql }}). It runs with the
-- rights of the table's owner, so the table's triggers, defaults and checks never run as repctl's
-- (superuser) role; it touches nothing of repctl's but what the table's read function gives it (the
-- current versions of the batch's keys, or for the rules without versions the keys this node has
-- changes of queued for the origin), and its conflict decisions go back to repctl.apply, which
-- records them.
-- Dropped first: CREATE OR REPLACE cannot change a function's arguments or result columns (an
-- older repctl's took the versions, and a lock-only call, from repctl.apply).
drop function if exists repctl.{{ apply_fn | qi }}(jsonb, boolean, text, jsonb, text[], text[], boolean);
drop function if exists repctl.{{ apply_fn | qi }}(jsonb, boolean, text, text[], text[]);
create or replace function repctl.{{ apply_fn | qi }}(p_changes jsonb, p_truncate boolean, p_origin text,
                                                      p_columns text[], p_values text[])
returns table (k jsonb, kind text, local_row jsonb, before_row jsonb, remote_row jsonb, wins boolean, ts timestamptz, n integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
{% include "table/text_settings.sql" %}
{% include "plan_settings.sql" %}
as $fn$
#variable_conflict use_column
declare
  v_inserted boolean := false;
{% if not append_only %}
  -- What decides on the batch's rows besides the rows (see the table's read function).
  v_versions jsonb;
{% endif %}
begin
{% if append_only %}
  -- Append-only (no key): every change is an insert, and the table cannot be truncated. A batch
  -- replayed, or a synchronous flush delivered again by a drain, is left out by repctl.apply
  -- (repctl.unapplied), so each insert lands once.
  if p_truncate or p_values is not null or not (p_changes -> 'op') <@ '["I"]' then
    raise exception 'repctl: node % sent changes of % other than inserts as row images; node % replicates it append-only',
      p_origin, {{ name | ql }}, {{ node | ql }}
      using errcode = 'unique_violation', hint = 'run the same repctl version on every node';
  end if;
  {{ insert_images() }};
{% else %}
  if p_truncate then
{% if where %}
    delete from {{ table }} where ({{ where }});
{% else %}
    truncate only {{ table }};
{% endif %}
    return;
  end if;
  if p_values is not null then
    -- Inserts as column arrays (see repctl.apply): one plain insert, no json to parse. Whatever
    -- fails it, a key this node has included, fails the call, and the batch comes again as row
    -- images, which the paths below compare and decide on.
    if p_columns is distinct from {{ columnar | map(attribute="name") | list | ql }}::text[] then
      raise exception 'repctl: node % sent the columns % of %; node % replicates %',
        p_origin, p_columns, {{ name | ql }}, {{ node | ql }}, {{ columnar | map(attribute="name") | list | ql }}::text[];
    end if;
{% if versioned %}
    if jsonb_array_length(p_changes -> 'ts') is distinct from array_length(p_values, 2) then
      raise exception 'repctl: node % sent the column arrays of % without their times; node % compares them (conflict rule %)',
        p_origin, {{ name | ql }}, {{ node | ql }}, {{ conflict | ql }}
        using hint = 'run repctl alter-table ' || {{ name | ql }} || ' --conflict RULE so that every node has the same rule';
    end if;
    return query
    with v as (
      select * from {{ column_arrays(true) }}
    ), inserted as (
    {{ insert_values("v") }}
        from v
    )
    select {{ image("v", key_column_types) }}, null::text, null::jsonb, null::jsonb, {{ image("v", columns) }},
           true, {% if conflict_column %}coalesce(v.{{ conflict_column | qi }}::timestamptz, v.{{ ts_alias | qi }}::timestamptz){% else %}v.{{ ts_alias | qi }}::timestamptz{% endif %}, null::integer
      from v;
{% else %}
    {{ insert_values("v") }}
      from {{ column_arrays(false) }};
{% endif %}
    return;
  end if;
  -- The batch's rows are locked before what decides on them is read, so that the decision is on
  -- what is then written over: a writer here that changed one meanwhile has committed its row
  -- and its version (or queued change) by then, and a later one waits for this batch. In key
  -- order, as every applier.
  if jsonb_array_length(p_changes -> 'op') = 1 then
    perform from {{ table }} as t,
                 (select {{ change_key("c") }} as k
                    from (select p_changes -> 'op' ->> 0 as op, p_changes -> 'r' -> 0 as r, p_changes -> 'o' -> 0 as o) as c) as c
     where ({{ keys("t") }}) = ({{ typed_key("c") }})
       for update of t;
  else
    -- One index probe per key: as a join the planner took the batch for 100 rows and scanned the
    -- whole table instead (1 ms for one row of a 2,000-row table).
    perform from (select distinct {{ typed_key("c", true) }}
                    from (select {{ change_key("c") }} as k
                            from rows from (jsonb_array_elements_text(p_changes -> 'op'), jsonb_array_elements(p_changes -> 'r'),
                                            jsonb_array_elements(p_changes -> 'o')) as c(op, r, o)) as c
                   order by {{ keys("") }}) as c
     cross join lateral (select from {{ table }} as t where ({{ keys("t") }}) = ({{ keys("c") }}) for update of t) as l;
  end if;
{% if reads %}
  v_versions := repctl.{{ read_fn | qi }}(p_origin, p_changes);
{% endif %}
{% if not versioned and not merging %}
  if v_versions is null and jsonb_array_length(p_changes -> 'op') = 1{% if not update_columns %} and p_changes -> 'op' ->> 0 <> 'U'{% endif %} then
    -- One change, none of this node's queued for the origin (a synchronous commit's usual
    -- payload): one plain statement applies it when this node's row is what the origin started
    -- from (or, for an insert, there is none), which is no conflict. Anything else is decided below.
    case p_changes -> 'op' ->> 0
{% if update_columns %}
    when 'U' then
      update {{ table }} as t set
{% for c in columns if c.name not in key_columns %}
        {{ c.name | qi }} = (c.r ->> {{ c.name | ql }})::{{ c.type }}{% if not loop.last %},{% endif +%}
{% endfor %}
        from (select p_changes -> 'r' -> 0 as r, p_changes -> 'o' -> 0 as o) as c
       where ({{ keys("t") }}) = ({{ typed_key("c", image="o") }}) and {{ image("t", columns) }} = c.o;
{% endif %}
    when 'D' then
      delete from {{ table }} as t using (select p_changes -> 'o' -> 0 as o) as c
       where ({{ keys("t") }}) = ({{ typed_key("c", image="o") }}) and {{ image("t", columns) }} = c.o;
    when 'I' then
      {{ insert_images() }}
      on conflict ({{ keys("") }}) do nothing;
    end case;
    if found then
      return;
    end if;
  end if;
{% endif %}
  if (p_changes -> 'op') <@ '["I"]' and v_versions is null then
    -- Only inserts (a bulk load, the common backlog): tried as one plain insert, which is all
    -- applying them takes when the keys are new here. A key this node has, or one inserted twice
    -- in the batch, fails it with nothing written, and the batch takes the path below, which
    -- compares and decides. So does a key v_versions lists: one with a version here (a newer
    -- delete of it must win), or with a change queued here for the origin (a concurrent one).
    begin
      {{ insert_images() }};
      v_inserted := true;
    exception when unique_violation then
      null;
    end;
    if v_inserted then
{% if versioned %}
      return query
      select e.r - {{ non_key_columns | ql }}::text[], null::text, null::jsonb, null::jsonb, e.r, true, {{ version_ts("e") }},
             e.n::integer
        from rows from (jsonb_array_elements_text(p_changes -> 'op'), jsonb_array_elements(p_changes -> 'r'),
                        jsonb_array_elements_text(p_changes -> 'ts'), jsonb_array_elements_text(p_changes -> 'n'))
             as e(op, r, ts, n);
{% endif %}
      return;
    end if;
  end if;
  return query
  with ev as (
    select {% if versioned %}c.ord, {% endif %}c.s::bigint as s, c.op, {{ reshaped("c", "r") }} as r, {{ reshaped("c", "o") }} as o, c.resolved::boolean as resolved, c.n::integer as n,
           {{ version_ts("c") }} as ts,
           {{ change_key("c") }} as k
      from rows from (jsonb_array_elements_text(p_changes -> 's'), jsonb_array_elements_text(p_changes -> 'op'),
                      jsonb_array_elements(p_changes -> 'r'), jsonb_array_elements(p_changes -> 'o'),
                      jsonb_array_elements_text(p_changes -> 'ts'), jsonb_array_elements_text(p_changes -> 'resolved'),
                      jsonb_array_elements_text(p_changes -> 'n')){% if versioned %} with ordinality{% endif +%}
           as c(s, op, r, o, ts, resolved, n{% if versioned %}, ord{% endif %})
{% if merging %}
  ), marked as (
    -- Per change: its key's last delete, with which what the origin did before went{% if versioned %}, and its last
    -- change that did more than increment delta columns, the one versions decide{% endif %}.
    select ev.*, max(ev.s) filter (where ev.op = 'D') over (partition by ev.k) as last_d{% if versioned %},
           max(ev.s) filter (where ev.op <> 'U' or {{ less_delta("ev", "r") }} is distinct from {{ less_delta("ev", "o") }})
             over (partition by ev.k) as last_v{% endif +%}
      from ev
  ), chained as (
    select {% if versioned %}m.ord, {% endif %}m.k, m.op, m.r, m.resolved, m.last_d, first_value(m.op) over w as first_op, first_value(m.o) over w as first_o,
{% if versioned %}
           max(m.ts) filter (where m.s = m.last_v) over w as ts, max(m.n) filter (where m.s = m.last_v) over w as n,
{% else %}
           m.ts, m.n,
{% endif %}
{% for c in delta_columns %}
           -- The increments since the key's last delete; an insert counts from zero.
           coalesce(sum(coalesce((m.r ->> {{ c.name | ql }})::{{ c.type }}, 0) - coalesce((m.o ->> {{ c.name | ql }})::{{ c.type }}, 0))
                      filter (where m.op <> 'D' and m.s > coalesce(m.last_d, 0)) over w, 0) as {{ c.inc | qi }},
{% endfor %}
           row_number() over w as pos, count(*) over w as changes
      from marked as m
    window w as (partition by m.k order by m.s rows between unbounded preceding and unbounded following)
  ), batch as (
    -- Per key: where the origin started (first change) and ended (last change), and whether it
    -- did more than increment delta columns: then the rule decides the other columns ("renewed":
    -- all of them, for a row the origin inserted, or sent back as a resolution).
    select {% if versioned %}c.ord, {% endif %}c.k, c.first_op, c.first_o, c.op = 'D' as del, c.r as img, c.ts, c.n, c.resolved,{% for d in delta_columns %} c.{{ d.inc | qi }},{% endfor +%}
           c.resolved or c.first_op = 'I' or c.last_d is not null as renewed,
           c.resolved or c.first_op = 'I' or c.last_d is not null
             or {% if versioned %}c.ts is not null{% else %}{{ less_delta("c", "r") }} is distinct from {{ less_delta("c", "first_o") }}{% endif %} as nchanged
      from chained as c
     where c.pos = c.changes
{% else %}
  ), repeated as (
    -- Whether any key has more than one change, found by hashing: the sort below is for those
    -- batches only.
    select exists (select from ev group by ev.k having count(*) > 1) as found
  ), batch as (
    -- Per key: what the origin started from (first change) and where it ended (last change). Each
    -- branch runs only when its one-time condition holds.
    select {% if versioned %}ev.ord, {% endif %}ev.k, ev.op as first_op, ev.o as first_o, ev.op = 'D' as del, ev.r as img, ev.ts, ev.n, ev.resolved
      from ev
     where not (select r.found from repeated as r)
    union all
    -- A resolution decides the key only as its last change: a later change of the origin's may
    -- still be concurrent with one queued here.
    select {% if versioned %}w.ord, {% endif %}w.k, w.first_op, w.first_o, w.op = 'D' as del, w.r as img, w.ts, w.n, w.resolved
      from (select ev.*, first_value(ev.op) over k as first_op, first_value(ev.o) over k as first_o,
                   row_number() over k as pos, count(*) over k as changes
              from ev window k as (partition by ev.k order by ev.s rows between unbounded preceding and unbounded following)) as w
     where w.pos = w.changes and (select r.found from repeated as r)
{% endif %}
  ), here as materialized (
    -- Materialized: the judgement below reads cur several times, one index probe per key is enough.
    select b.*, (select {{ image("t", columns) }} from {{ table }} as t where ({{ keys("t") }}) = ({{ typed_key("b") }})) as cur{% if not versioned %},
           coalesce(v_versions @> jsonb_build_array(b.k), false) as pending{% endif %}
      from batch as b
{% if added %}
  ), merged as (
    -- An image from before alter-table --ddl added columns lacks them: this node's row keeps its
    -- values there (a new row takes the defaults, see insert_rows).
    select {% if versioned %}h.ord, {% endif %}h.k, h.first_op, case when jsonb_typeof(h.first_o) = 'object' then coalesce(h.cur, '{}') || h.first_o else h.first_o end as first_o,
           h.del, case when jsonb_typeof(h.img) = 'object' then coalesce(h.cur, '{}') || h.img else h.img end as img, h.ts, h.n, h.resolved,
           h.cur{% if not versioned %}, h.pending{% endif %}
      from here as h
{% endif %}
  ), judged as (
    select h.*, case
{% if conflict in ["origin-wins", "target-wins"] %}
        -- A resolution (a row the origin kept, sent back) crossing a later change of the key made
        -- here was concurrent with it: applied, it would overwrite a row the origin is yet to get.
        when h.resolved and h.pending then {{ shape_kind("h") }}
{% endif %}
        when h.resolved then null
{% if merging %}
        -- A row here that the origin did not delete: the rule decides only the columns the
        -- origin decided; a difference elsewhere (delta columns, or with merge-columns the other
        -- columns) is merged.
        when h.cur is not null and not h.del then case
          when h.nchanged and ({{ decided_conflict("h") }}) then {{ shape_kind("h") }}
          when (h.first_op = 'I' and h.cur is distinct from h.img) or (h.first_op <> 'I' and h.cur is distinct from h.first_o){% if conflict in ["origin-wins", "target-wins"] %}
               or h.pending{% endif %} then 'merged'
        end
{% endif %}
{% if conflict in ["origin-wins", "target-wins"] %}
        -- This node has a change of the key queued for the origin: the two were concurrent,
        -- whatever the values.
        when h.pending then {{ shape_kind("h") }}
{% endif %}
        when h.first_op = 'I' then case when h.cur is not null and h.cur is distinct from h.img then 'insert_exists' end
        when h.cur is null then case when h.first_op = 'U' then 'update_missing' else 'delete_missing' end
        when h.cur is distinct from h.first_o and h.cur is distinct from h.img then
          case when h.first_op = 'U' then 'update_differs' else 'delete_differs' end
      end as conflict
      from {% if added %}merged{% else %}here{% endif %} as h
  ), decided as (
    select j.*, {% if versioned %}v.ts = j.ts and v.origin = p_origin as replayed, v.origin <> p_origin as crossed, {% endif %}case
{% if merging %}
        -- Only delta columns incremented: into the row here; a row gone here stays gone.
        when not j.nchanged and not j.del then j.cur is not null
{% endif %}
{% if versioned %}
        -- Versions decide every change, whatever the values: a change whose image happens to
        -- equal this node's row must not stamp its older version over the newer one. No version
        -- here (a row from before add-table, or a key never written): nothing to compare.
        when v.ts is null then true
{% else %}
        when j.conflict is null or j.conflict in ('delete_missing', 'merged') then true
{% endif %}
{% if conflict == "error" %}
        -- Not applied; repctl.apply sees the conflict and fails the whole batch.
        else false
{% elif conflict == "origin-wins" %}
        else true
{% elif conflict == "target-wins" %}
        else false
{% else %}
{% if conflict == "node-priority" %}
        -- The version that has seen more writes of the row wins: a change made after this node's
        -- version reached its origin always has (so a node listed later can change a row the
        -- first one wrote). Of two that have seen as many, concurrent, the origin listed first
        -- wins; the same node, or both unlisted: the newer version.
        when coalesce(j.n, 0) <> v.n then coalesce(j.n, 0) > v.n
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
      -- v_versions holds the version of each change's key at the change's position (see the read function).
      left join (select p.ord, p.origin, p.ts::timestamptz as ts, p.n::integer as n
                   from rows from (jsonb_array_elements_text(v_versions -> 'origin'), jsonb_array_elements_text(v_versions -> 'ts'),
                                   jsonb_array_elements_text(v_versions -> 'n')) with ordinality as p(origin, ts, n, ord)) as v
        on v.ord = j.ord
{% endif %}
  ), deleted as (
    delete from {{ table }} as t using decided as d
     where d.wins and d.del and ({{ keys("t") }}) = ({{ typed_key("d") }})
  ), inserted as (
    -- Keys this node does not have: a plain insert, without ON CONFLICT's speculative insertion.
    -- Should a writer here insert one of them meanwhile, the batch fails; drain then applies it a
    -- change at a time, and sees that row as a conflict.
    {{ insert_decided(false) }}
{% if merging %}
  ), updated as (
    -- Rows here: delta columns are incremented whoever wins, the others take the origin's values
    -- where it wins and decided them.
    update {{ table }} as t set
{% for c in merge_targets %}
{% if c.inc %}
      {{ c.name | qi }} = case when d.{{ c.inc | qi }} = 0 then t.{{ c.name | qi }} else coalesce(t.{{ c.name | qi }}, 0) + d.{{ c.inc | qi }} end{% if not loop.last %},{% endif +%}
{% else %}
      {{ c.name | qi }} = case when d.wins and {{ decides("d", c.name) }} then (d.img ->> {{ c.name | ql }})::{{ c.type }} else t.{{ c.name | qi }} end{% if not loop.last %},{% endif +%}
{% endif %}
{% endfor %}
      from decided as d
     where not d.del and d.cur is not null and ({{ keys("t") }}) = ({{ typed_key("d") }})
       and ((d.wins and d.nchanged){% for c in delta_columns %} or d.{{ c.inc | qi }} <> 0{% endfor %})
{% else %}
  ), upserted as (
    {{ insert_decided(true) }}
{% if update_columns %}
  on conflict ({{ keys("") }}) do update set
{% for c in update_columns %}
    {{ c | qi }} = excluded.{{ c | qi }}{% if not loop.last %},{% endif +%}
{% endfor %}
{% else %}
  on conflict ({{ keys("") }}) do nothing
{% endif %}
{% endif %}
  )
{% if versioned %}
  -- A change that loses to this node's version was concurrent with it, even where the images
  -- alone show no difference: a conflict of the kind its shape gives. One applied here already
  -- (a replay) is none.
  select d.k, case when d.replayed then null
                   else coalesce(d.conflict, case when not d.wins then {{ shape_kind("d") }} end{% if not merging %},
                                 -- Winning over another node's version of a row that is not what the
                                 -- origin started from: concurrent, though the values coincide.
                                 case when d.crossed and case when d.first_op = 'I' then d.cur is not null
                                                              else d.cur is distinct from d.first_o end
                                      then {{ shape_kind("d") }} end{% endif %}) end,
         d.cur, d.first_o, case when d.del then null else d.img end, d.wins, d.ts, d.n
    from decided as d;
{% else %}
  select d.k, d.conflict, d.cur, d.first_o, case when d.del then null else d.img end, d.wins, d.ts, null::integer
    from decided as d
   where d.conflict is not null;
{% endif %}
{% endif %}
end
$fn$;
revoke all on function repctl.{{ apply_fn | qi }}(jsonb, boolean, text, text[], text[]) from public;
alter function repctl.{{ apply_fn | qi }}(jsonb, boolean, text, text[], text[]) owner to {{ table_owner | qi }};
