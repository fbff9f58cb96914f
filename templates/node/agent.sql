-- repctl's agent role on node {{ node | ql }}: it owns repctl's objects and its SECURITY DEFINER
-- functions run as it. Committed before init's own transaction: roles are shared by a cluster's
-- databases, and two nodes in one cluster must not hold the same role row in open transactions.
do $fn$
declare
  v_role record;
begin
  select r.oid, r.rolcanlogin, r.rolname = current_user as is_me,
         exists (select from pg_auth_members m where m.roleid = r.oid) as has_members
    into v_role from pg_roles r where r.rolname = {{ agent | ql }};
  if not found then
    create role {{ agent | qi }} nologin;
  elsif v_role.rolcanlogin or v_role.is_me or v_role.has_members or v_role.oid < 16384 then
    -- Everyone who can log in as it, or is a member, would hold every right repctl's functions have.
    raise exception 'repctl: agent_role % exists on node % as a login, member-holding or built-in role',
      {{ agent | ql }}, {{ node | ql }}
      using hint = 'name a role of its own in agent_role (repctl.toml); init creates it';
  end if;
end
$fn$;
alter role {{ agent | qi }} nologin {% if superuser %}superuser{% else %}nosuperuser{% endif %};
