-- repctl {{ version | ql }}: node {{ node | ql }}. Idempotent: a second run changes nothing.
select pg_advisory_xact_lock({{ lock_key }});
create schema if not exists repctl;
revoke all on schema repctl from public;
{% if not dblink_installed %}create extension if not exists dblink with schema {{ dblink_schema | qi }};
{% endif %}
-- The seed article's advice: ordinary roles must not read peers' passwords.
revoke all on pg_catalog.pg_user_mappings from public;

{% include "node/catalog.sql" %}
{% if installed_schema is not none and installed_schema < schema_version %}
{% include "node/migrations.sql" %}
{% endif %}
{% include "node/servers.sql" %}
{% include "node/ownership.sql" %}
{% include "node/queue_read.sql" %}
{% include "node/conflict_error.sql" %}
{% include "node/reachability.sql" %}
{% include "node/flush.sql" %}
{% include "node/apply.sql" %}
{% include "node/park.sql" %}
{% include "node/prune.sql" %}
{% include "node/ddl_guard.sql" %}
{% include "node/privileges.sql" %}
{% include "node/peers.sql" %}
