{#- One node's checksum of a replicated table: count(*) and the sum of row hashes of
    ops/checksum.sql. -#}
{%- from "ops/checksum.sql" import row_sum -%}
select count(*) as rows, {{ row_sum(checksum, none) }} as hash
  from only {{ table }}{% if where %} where ({{ where }}){% endif %}
