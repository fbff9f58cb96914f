{#- Apply: a batch of one table's consecutive changes, in origin order, in one statement. Only the last
    change per key decides the row, so replaying a batch, or part of one, ends in the same state. -#}
{%- macro keys(alias) -%}
{% for c in key_columns %}{% if alias %}{{ alias | qi }}.{% endif %}{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
-- Apply for {{ name | ql }} on node {{ node | ql }}.
create or replace function repctl.{{ apply_fn | qi }}(p_changes jsonb, p_truncate boolean) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
{% include "table/text_settings.sql" %}
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
    select (c ->> 's')::bigint as s, c ->> 'op' = 'D' as d, case when c ->> 'op' = 'D' then c -> 'o' else c -> 'r' end as img
      from jsonb_array_elements(p_changes) as c
  ), typed as (
    select ev.s as {{ seq_alias | qi }}, ev.d as {{ del_alias | qi }},
{% for c in columns %}
           (ev.img ->> {{ c.name | ql }})::{{ c.type }} as {{ c.name | qi }}{% if not loop.last %},{% endif +%}
{% endfor %}
      from ev
  ), fin as (
    select distinct on ({{ keys("") }}) * from typed order by {{ keys("") }}, {{ seq_alias | qi }} desc
  ), deleted as (
    delete from {{ table }} as t using fin
     where fin.{{ del_alias | qi }} and ({{ keys("t") }}) = ({{ keys("fin") }})
  )
  insert into {{ table }} as t ({% for c in columns %}{{ c.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %})
{% if overriding %}
  overriding system value
{% endif %}
  select {% for c in columns %}fin.{{ c.name | qi }}{% if not loop.last %}, {% endif %}{% endfor +%}
    from fin where not fin.{{ del_alias | qi }}
{% if update_columns %}
  on conflict ({{ keys("") }}) do update set
{% for c in update_columns %}
    {{ c | qi }} = excluded.{{ c | qi }}{% if not loop.last %},{% endif +%}
{% endfor %}
{% else %}
  on conflict ({{ keys("") }}) do nothing
{% endif %}
  ;
end
$fn$;
revoke all on function repctl.{{ apply_fn | qi }}(jsonb, boolean) from public;
