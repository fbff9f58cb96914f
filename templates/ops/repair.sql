{#- repair --from: one batch of statements making a node's rows match the source's. They run in one
    transaction with replication suppressed (`begin`); each touches a row only while it is still
    as it was compared (same row hash, or still absent), so a change replicated meanwhile wins.
    Each returns the keys it changed, for the log. -#}
{%- macro keycols(a) -%}
{% for k in key %}{{ a | qi }}.{{ k.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{%- macro keyjson(a) -%}
jsonb_build_object({% for k in key %}{{ k.name | ql }}, {{ a | qi }}.{{ k.name | qi }}::text{% if not loop.last %}, {% endif %}{% endfor %})::text
{%- endmacro -%}
{%- macro hash(a) -%}
hashtext(row({% for c in columns %}{{ a | qi }}.{{ c.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %})::text)
{%- endmacro -%}
{%- macro values(r) -%}
{% for v in r.values %}{{ v.value | ql_or_null }}::{{ v.type }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{% if query == "begin" %}
-- repctl repair: node {{ node | ql }}, table {{ name | ql }}, from node {{ source | ql }}
select set_config({{ applying_setting | ql }}, 'on', true);
{% for s in text_settings %}
select set_config({{ s[0] | ql }}, {{ s[1] | ql }}, true);
{% endfor %}
{% elif query == "delete" %}
-- Rows the source does not have.
delete from only {{ table }} as t
 using (values
{% for r in rows %}
   ({{ values(r) }}, {{ r.hash }}){% if not loop.last %},{% endif +%}
{% endfor %}
 ) as v({% for k in key %}{{ k.name | qi }}, {% endfor %}{{ hash_alias | qi }})
 where ({{ keycols("t") }}) = ({{ keycols("v") }}) and {{ hash("t") }} = v.{{ hash_alias | qi }}
returning {{ keyjson("t") }};
{% elif query == "update" %}
-- Rows whose values differ from the source's.
update only {{ table }} as t set
{% for c in update_columns %}
  {{ c | qi }} = v.{{ c | qi }}{% if not loop.last %},{% endif +%}
{% endfor %}
  from (values
{% for r in rows %}
   ({{ values(r) }}, {{ r.hash }}){% if not loop.last %},{% endif +%}
{% endfor %}
 ) as v({% for c in columns %}{{ c.name | qi }}, {% endfor %}{{ hash_alias | qi }})
 where ({{ keycols("t") }}) = ({{ keycols("v") }}) and {{ hash("t") }} = v.{{ hash_alias | qi }}
returning {{ keyjson("t") }};
{% elif query == "insert" %}
-- Rows only the source has.
insert into {{ table }} as t ({% for c in columns %}{{ c.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %})
{% if overriding %}
overriding system value
{% endif %}
values
{% for r in rows %}
   ({{ values(r) }}){% if not loop.last %},{% endif +%}
{% endfor %}
on conflict ({% for k in key %}{{ k.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %}) do nothing
returning {{ keyjson("t") }};
{% else %}
{{ raise("ops/repair.sql has no query " ~ query) }}
{% endif %}
