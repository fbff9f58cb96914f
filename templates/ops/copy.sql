{#- add-table --copy-from: the statements of the initial copy, over the replicated columns and rows
    (`--where`). `query` picks one. -#}
{%- macro cols() -%}
{% for c in columns %}{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{% if query == "has_rows" %}
select exists (select from only {{ table }}{% if where %} where ({{ where }}){% endif %})
{% elif query == "count" %}
select count(*) from only {{ table }}{% if where %} where ({{ where }}){% endif %}
{% elif query == "lock" %}
-- Writers on this node wait until the copy has committed here; readers go on.
lock table only {{ table }} in exclusive mode
{% elif query == "empty" %}
{% if where %}
delete from only {{ table }} where ({{ where }})
{% else %}
truncate only {{ table }}
{% endif %}
{% elif query == "copy_out" %}
copy (select {{ cols() }} from only {{ table }}{% if where %} where ({{ where }}){% endif %}) to stdout
{% elif query == "copy_in" %}
copy {{ table }} ({{ cols() }}) from stdin
{% else %}
{{ raise("ops/copy.sql has no query " ~ query) }}
{% endif %}
