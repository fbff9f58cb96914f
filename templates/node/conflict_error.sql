{#- Included by node/init.sql: the error the rule `error` stops a pair with. -#}
-- Raised by apply functions of tables with the conflict rule `error`: the pair stops at the change.
create or replace function repctl.conflict_error(p_tbl text, p_origin text, p_kind text, p_key jsonb,
                                                 p_here jsonb, p_before jsonb, p_after jsonb) returns boolean
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
begin
  raise exception 'repctl: conflict % on % key % (rule error): node % has %, node % changed it from % to %',
    p_kind, p_tbl, p_key, (select value from repctl.meta where key = 'node'), coalesce(p_here::text, 'no row'),
    p_origin, coalesce(p_before::text, 'no row'), coalesce(p_after::text, 'deleted')
    using errcode = 'unique_violation',
          hint = 'fix the row on one node and drain again, or change the rule: repctl alter-table --conflict RULE';
end
$fn$;

