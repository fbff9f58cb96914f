{#- The sum of row hashes verify compares (and verify --rows compares per key range), over the
    columns of `checksum.columns` in their order, each qualified by `alias` when one is given. Every
    node must use the same `checksum.mode`; the caller pins the session settings that shape text forms.
    - "text", the seed's: hashtext(row(...)::text). Formatting every value is most of its cost.
    - "hash": each column's 64-bit hash is seeded with the hash of the columns before it, so a row
      hash depends on every value and its place (hash_record_extended of the whole row adds the
      columns' hashes linearly: summed over rows, two rows swapping a value would leave the sum
      unchanged mod 2^64).
      `c.how` says how a column is hashed: "direct" by its type's hash function
      `c.schema`.`c.func`, "record" by that function through hash_record_extended (when the
      function is declared for another type, e.g. date's takes int4), "text" by its text form. A
      nullable column is hashed on its own and then mixed in, NULL as an arbitrary constant (0
      through hash_record_extended): a strict function would turn NULL into a NULL row hash, which
      the sum skips. The numeric sum cannot overflow; it is reduced mod 2^64 into bigint's range. -#}
{%- macro column(c, alias) -%}
{% if alias %}{{ alias | qi }}.{% endif %}{{ c.name | qi }}
{%- endmacro -%}
{%- macro hash_open(c, alias) -%}
{% if c.how == "direct" %}{{ c.schema | qi }}.{{ c.func | qi }}({{ column(c, alias) }}{% elif c.how == "record" %}pg_catalog.hash_record_extended(row({{ column(c, alias) }}){% else %}pg_catalog.hashtextextended({{ column(c, alias) }}::text{% endif %}
{%- endmacro -%}
{%- macro row_sum(checksum, alias) -%}
{% if checksum.mode == "text" %}
coalesce(sum(hashtext(row({% for c in checksum.columns %}{{ column(c, alias) }}{% if not loop.last %}, {% endif %}{% endfor %})::text)), 0)::bigint
{%- else %}
((coalesce(sum({% for c in checksum.columns | reverse %}{% if c.nullable %}pg_catalog.hashint8extended(coalesce({{ hash_open(c, alias) }}, 0), 6164312513634113437), {% else %}{{ hash_open(c, alias) }}, {% endif %}{% endfor %}0{% for c in checksum.columns %}){% endfor %}), 0)
         % 18446744073709551616 + 27670116110564327424) % 18446744073709551616 - 9223372036854775808)::bigint
{%- endif %}
{%- endmacro -%}
