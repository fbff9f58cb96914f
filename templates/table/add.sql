-- repctl add-table {{ name | ql }} on node {{ node | ql }}: {{ table }}
select pg_advisory_xact_lock({{ lock_key }});
insert into repctl.tables (name, nsp, rel, columns, key_columns, where_clause, mode, on_peer_failure, on_apply_error,
                           capture_fn, apply_fn, conflict, conflict_column, node_priority, delta_columns, merge_columns,
                           column_types, former_columns, added_columns, table_columns, interleave_sequences,
                           append_only)
values ({{ name | ql }}, {{ nsp | ql }}, {{ rel | ql }}, {{ column_names | ql }}, {{ key_columns | ql }},
        {{ where | ql_or_null }}, {{ mode | ql }}, {{ on_peer_failure | ql }}, {{ on_apply_error | ql }},
        {{ capture_fn | ql }}, {{ apply_fn | ql }}, {{ conflict | ql }}, {{ conflict_column | ql_or_null }}, {{ node_priority | ql }},
        {{ delta_columns | map(attribute="name") | list | ql }}, {% if merge_columns %}true{% else %}false{% endif %},
        {{ column_types | ql }}, {{ former_json | ql }}::jsonb, {{ added | ql }},
        array(select a.attname::text from pg_catalog.pg_attribute a
               where a.attrelid = {{ table | ql }}::pg_catalog.regclass and a.attnum > 0 and not a.attisdropped
                 and a.attgenerated = '' order by a.attnum), {% if interleave_sequences %}true{% else %}false{% endif %}, {% if append_only %}true{% else %}false{% endif %})
on conflict (name) do update set
  nsp = excluded.nsp, rel = excluded.rel, columns = excluded.columns, key_columns = excluded.key_columns,
  where_clause = excluded.where_clause, mode = excluded.mode, on_peer_failure = excluded.on_peer_failure,
  on_apply_error = excluded.on_apply_error, capture_fn = excluded.capture_fn, apply_fn = excluded.apply_fn,
  conflict = excluded.conflict, conflict_column = excluded.conflict_column, node_priority = excluded.node_priority,
  delta_columns = excluded.delta_columns, merge_columns = excluded.merge_columns,
  column_types = excluded.column_types, former_columns = excluded.former_columns, added_columns = excluded.added_columns,
  table_columns = excluded.table_columns, interleave_sequences = excluded.interleave_sequences,
  append_only = excluded.append_only;
{% include "table/read.sql" %}
{% include "table/apply.sql" %}
{% include "table/capture.sql" %}
select repctl.build_table_apply();
-- The capture function runs as repctl's agent, which may call the apply function.
select repctl.adopt();
