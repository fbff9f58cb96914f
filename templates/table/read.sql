{#- Read: what decides on a batch's rows besides the rows themselves, for the table's apply function
    to read once it has locked them. Absent for the rules that need nothing else (error, and
    append-only tables). -#}
{%- from "version_of.sql" import version_of %}
{% if reads %}
-- What decides on the keys of a batch from p_origin for {{ name | ql }} on node {{ node | ql }}:
{% if versioned %}
-- their current versions (who wrote each row last, and when).
{% else %}
-- those this node has changes of queued for the origin. A change of such a key is concurrent with
-- this node's, even where the values coincide.
{% endif %}
-- The table's apply function calls it as the table's owner, who may call nothing else of repctl's:
-- it reads only this table's keys, as repctl's agent.
create or replace function repctl.{{ read_fn | qi }}(p_origin text, p_changes jsonb) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
{% include "plan_settings.sql" %}
{% if not versioned %}
-- The queue has no index by key: each of its rows for the origin is looked up once among the
-- batch's keys, hashed. Taking the queue for a few rows (its statistics lag behind writers), the
-- planner compared every row with every key instead, a batch times the queue: with writers on both
-- nodes, drain fell behind for good (tests/schema.rs).
set enable_nestloop = off
{% endif %}
as $fn$
begin
{% if versioned %}
  -- The version of each change's key at the change's position in the batch (json null where the
  -- key has none), an array per field as the batch itself: the apply joins them on the position
  -- instead of the jsonb key, and no object is built and parsed per version (half the CPU of
  -- objects keyed by k, docs/benchmarks.md). Null when no key has one. One index probe per change
  -- (limit 1: as a join the planner hashed every version of the table).
  return (select case when count(v.ts) > 0 then jsonb_build_object('origin', jsonb_agg(v.origin order by c.ord),
                                                                   'ts', jsonb_agg(v.ts order by c.ord),
                                                                   'n', jsonb_agg(v.n order by c.ord)) end
            from repctl.change_keys(p_changes, {{ non_key_columns | ql }}::text[]) with ordinality as c(k, ord)
            left join lateral (select v.origin, v.ts, v.n from repctl.version v
                                where v.tbl = {{ name | ql }} and {{ version_of("c") }} limit 1) as v on true);
{% else %}
  return (select jsonb_agg(distinct coalesce(q.r, q.o) - {{ non_key_columns | ql }}::text[])
            from repctl.queue q
           where q.peer = p_origin and q.tbl = {{ name | ql }}
             and coalesce(q.r, q.o) - {{ non_key_columns | ql }}::text[]
                 in (select repctl.change_keys(p_changes, {{ non_key_columns | ql }}::text[])));
{% endif %}
end
$fn$;
revoke all on function repctl.{{ read_fn | qi }}(text, jsonb) from public;
grant usage on schema repctl to {{ table_owner | qi }};
grant execute on function repctl.{{ read_fn | qi }}(text, jsonb) to {{ table_owner | qi }};
{% else %}
drop function if exists repctl.{{ read_fn | qi }}(text, jsonb);
{% endif %}
