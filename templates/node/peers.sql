{#- Included by node/init.sql: per-peer queue partitions, servers and mappings, the final checks. -#}
{% for peer in peers %}
-- Peer {{ peer.name | ql }}: reached through foreign server {{ peer.server | qi }}.
create table if not exists repctl.{{ peer.partition | qi }} partition of repctl.queue for values in ({{ peer.name | ql }});
create sequence if not exists repctl.{{ peer.counter | qi }} as bigint;
insert into repctl.peer (name, server, counter) values ({{ peer.name | ql }}, {{ peer.server | ql }}, {{ peer.counter | ql }})
on conflict (name) do update set server = excluded.server, counter = excluded.counter
 where (peer.server, peer.counter) is distinct from (excluded.server, excluded.counter);
insert into repctl.delivery (peer) values ({{ peer.name | ql }}) on conflict do nothing;
select repctl.ensure_server({{ peer.server | ql }}, {{ peer.server_options | ql }}::jsonb);
grant usage on foreign server {{ peer.server | qi }} to {{ agent | qi }};
-- The options (with the password) come from a setting bound as a parameter, never from SQL text.
select repctl.ensure_user_mapping({{ peer.server | ql }}, {{ agent | ql }},
  current_setting({{ user_mappings_setting | ql }})::jsonb -> {{ peer.server | ql }});
{% endfor %}
{% if server_version_num >= 160000 %}
-- This node as its peers reach it, for repctl.peer_answers.
select repctl.ensure_server({{ self_server | ql }}, {{ self_server_options | ql }}::jsonb);
grant usage on foreign server {{ self_server | qi }} to {{ agent | qi }};
select repctl.ensure_user_mapping({{ self_server | ql }}, {{ agent | ql }},
  current_setting({{ user_mappings_setting | ql }})::jsonb -> {{ self_server | ql }});
{% endif %}
select repctl.adopt();
{% for peer in peers %}
select repctl.check_peer({{ peer.server | ql }}, {{ peer.name | ql }});
{% endfor %}
{% if server_version_num >= 160000 %}select repctl.check_peer({{ self_server | ql }}, {{ node | ql }});
{% endif %}
-- Capture joins every statement's rows with the peers: the planner must know there are few.
analyze repctl.peer;
