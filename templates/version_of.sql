{#- Imported by node/apply.sql and table/read.sql. The version in repctl.version v of the key k of
    alias (with v.tbl given beside it): found by the key's hash (version_hash), then k compared by
    jsonb_eq, a call, where `=` would have the planner take the primary key. -#}
{%- macro version_of(alias) -%}
jsonb_hash_extended(v.k, 0) = jsonb_hash_extended({{ alias | qi }}.k, 0) and jsonb_eq(v.k, {{ alias | qi }}.k)
{%- endmacro -%}
