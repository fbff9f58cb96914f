{#- Row-level comparison of one replicated table on one node (verify --rows, repair). `query` picks
    the statement. Keys travel as jsonb objects of the key columns' text forms (the form row images
    use) in bind parameters: `lo`/`hi` are the placeholder numbers of a key range's inclusive lower
    and exclusive upper bound, absent when the range is open. The caller pins the text settings. A
    range's sum is verify's (`checksum`, as every node agreed); a key's row hash is verify's text
    mode, `hashtext(row(...)::text)`, the int4 repair checks rows against. -#}
{%- from "ops/checksum.sql" import row_sum -%}
{%- macro keycols(a) -%}
{% for k in key %}{{ a | qi }}.{{ k.name | qi }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro -%}
{%- macro keyrow(a) -%}
({{ keycols(a) }})
{%- endmacro -%}
{#- A key from bind parameter $n. -#}
{%- macro typed_param(n) -%}
({% for k in key %}(${{ n }}::text::jsonb ->> {{ k.name | ql }})::{{ k.type }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro -%}
{#- A key from a jsonb (or jsonb text, with `cast`) column of a row source. -#}
{%- macro typed_col(a, col, cast) -%}
({% for k in key %}({{ a | qi }}.{{ col | qi }}{% if cast %}::jsonb{% endif %} ->> {{ k.name | ql }})::{{ k.type }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro -%}
{%- macro keyjson(a) -%}
jsonb_build_object({% for k in key %}{{ k.name | ql }}, {{ a | qi }}.{{ k.name | qi }}::text{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro -%}
{%- macro hash(a) -%}
hashtext(row({% for c in columns %}{{ a | qi }}.{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %})::text)
{%- endmacro -%}
{%- macro range(a) -%}
{% if lo %} and {{ keyrow(a) }} >= {{ typed_param(lo) }}{% endif %}{% if hi %} and {{ keyrow(a) }} < {{ typed_param(hi) }}{% endif %}{% if where %} and ({{ where }}){% endif %}
{%- endmacro -%}
{%- macro filtered() -%}
{% if where %} and ({{ where }}){% endif %}
{%- endmacro -%}
{% if query == "bounds" %}
-- Every ${{ step }}th key from the lower bound on, up to ${{ limit }} rows: the starts of blocks.
select {{ keyjson("s") }}::text
  from (select {{ keycols("t") }}, row_number() over (order by {{ keycols("t") }}) as repctl_rn
          from only {{ table }} as t
         where true{{ range("t") }}
         order by {{ keycols("t") }}
         limit ${{ limit }}) as s
 where (s.repctl_rn - 1) % ${{ step }} = 0
 order by s.repctl_rn
{% elif query == "range_sum" %}
select count(*)::int8, {{ row_sum(checksum, "t") }}
  from only {{ table }} as t
 where true{{ range("t") }}
{% elif query == "blocks_sum" %}
-- Per block [lo, hi) of the jsonb array $1 of [lo, hi] pairs: one index range scan each.
select b.i::int8, a.n, a.h
  from jsonb_array_elements($1::text::jsonb) with ordinality as b(r, i)
 cross join lateral (
   select count(*)::int8 as n, {{ row_sum(checksum, "t") }} as h
     from only {{ table }} as t
    where {{ keyrow("t") }} >= ({% for k in key %}(b.r -> 0 ->> {{ k.name | ql }})::{{ k.type }}{% if not loop.last %}, {% endif %}{% endfor %})
      and {{ keyrow("t") }} < ({% for k in key %}(b.r -> 1 ->> {{ k.name | ql }})::{{ k.type }}{% if not loop.last %}, {% endif %}{% endfor %}){{ filtered() }}
 ) as a
 order by b.i
{% elif query == "range_rows" %}
select {{ keyjson("t") }}::text, {{ hash("t") }}
  from only {{ table }} as t
 where true{{ range("t") }}
{% elif query == "recheck" %}
-- The row hash of each key in $1 (null: no row), in key order.
select c.k, l.h
  from unnest($1::text[]) as c(k)
  left join lateral (
    select {{ hash("t") }} as h
      from only {{ table }} as t
     where {{ keyrow("t") }} = {{ typed_col("c", "k", true) }}{{ filtered() }}
  ) as l on true
 order by {{ typed_col("c", "k", true) }}
{% elif query == "images" %}
-- The row image (column name to text form, as capture makes them) of each key in $1 that has a row.
select c.k, l.img
  from unnest($1::text[]) as c(k)
 cross join lateral (
    select jsonb_object(array[{% for c in columns %}{{ c | ql }}{% if not loop.last %}, {% endif %}{% endfor %}]::text[],
                        array[{% for c in columns %}t.{{ c | qi }}::text{% if not loop.last %}, {% endif %}{% endfor %}]::text[])::text as img
      from only {{ table }} as t
     where {{ keyrow("t") }} = {{ typed_col("c", "k", true) }}{{ filtered() }}
  ) as l
{% elif query == "queued" %}
-- Keys in $2 with a change of table $1 queued here for any peer; '*' when a TRUNCATE is queued.
select q.k::text
  from (select jsonb_build_object({% for k in key %}{{ k.name | ql }}, r -> {{ k.name | ql }}{% if not loop.last %}, {% endif %}{% endfor %}) as k
          from repctl.queue where tbl = $1 and r is not null
        union
        select jsonb_build_object({% for k in key %}{{ k.name | ql }}, o -> {{ k.name | ql }}{% if not loop.last %}, {% endif %}{% endfor %})
          from repctl.queue where tbl = $1 and o is not null) as q
 where q.k in (select c::jsonb from unnest($2::text[]) as c)
union all
select '*' where exists (select from repctl.queue where tbl = $1 and op = 'T')
{% else %}
{{ raise("ops/diff.sql has no query " ~ query) }}
{% endif %}
