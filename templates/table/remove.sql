-- repctl remove-table {{ name | ql }} on node {{ node | ql }}: {{ table }}
select pg_advisory_xact_lock({{ lock_key }});
{% if table_exists %}
drop trigger if exists {{ capture_triggers.insert | qi }} on {{ table }};
drop trigger if exists {{ capture_triggers.update | qi }} on {{ table }};
drop trigger if exists {{ capture_triggers.delete | qi }} on {{ table }};
drop trigger if exists {{ capture_triggers.truncate | qi }} on {{ table }};
{% endif %}
drop function if exists repctl.{{ capture_fn | qi }}();
drop function if exists repctl.{{ apply_fn | qi }}(jsonb, boolean, text, text[], text[]);
drop function if exists repctl.{{ read_fn | qi }}(text, jsonb);
delete from repctl.version where tbl = {{ name | ql }};
delete from repctl.queue where tbl = {{ name | ql }};
delete from repctl.tables where name = {{ name | ql }};
select repctl.build_table_apply();
