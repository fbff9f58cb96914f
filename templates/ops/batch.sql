{#- drain and run: the oldest `$1` changes queued for one peer after sequence number `$2`, each
    field as the text it has in repctl.changes_json's payload, which drain joins without
    re-encoding the row images. Read from the peer's partition in index order: a partition
    filled since autovacuum last analyzed it has no statistics, and with `where peer = ...` the
    planner guesses a few hundred rows and reads and sorts the whole backlog for every batch.
    The last column (the same in every row, computed once) tells whether no transaction was in
    progress when the statement's snapshot was taken: then every change numbered below the
    batch's last was committed or rolled back before the read, and none can turn up later
    (src/apply/drain.rs). The snapshot does not list transactions that took their id after the
    last one to finish; an id taken now, after the snapshot, is its lowest running one only when
    there were none. -#}
select q.seq, q.tbl, q.op::text, q.r::text, q.o::text, to_json(q.ts)::text, q.resolved,
       (select pg_snapshot_xmin(pg_current_snapshot()) = pg_current_xact_id()) as settled
  from repctl.{{ partition | qi }} as q
 where q.seq > $2
 order by q.peer, q.seq
 limit $1
