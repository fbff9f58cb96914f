{#- The seed's comparison, over the replicated columns in one order; the caller pins the session settings
    that shape text forms. -#}
select count(*) as rows, coalesce(sum(hashtext(row({% for c in columns %}{{ c | qi }}{% if not loop.last %}, {% endif %}{% endfor %})::text)), 0)::bigint as hash
  from only {{ table }}{% if where %} where ({{ where }}){% endif %}
