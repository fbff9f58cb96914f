{#- drain and run: the oldest `$1` changes queued for one peer after sequence number `$2`, each
    field as the text it has in repctl.changes_json's payload, which drain joins without
    re-encoding the row images. Read from the peer's partition in index order: a partition
    filled since autovacuum last analyzed it has no statistics, and with `where peer = ...` the
    planner guesses a few hundred rows and reads and sorts the whole backlog for every batch. -#}
select q.seq, q.tbl, q.op::text, q.r::text, q.o::text, to_json(q.ts)::text, q.resolved
  from repctl.{{ partition | qi }} as q
 where q.seq > $2
 order by q.peer, q.seq
 limit $1
