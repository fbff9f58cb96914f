//! pgbench's TPC-B tables and transaction (the history insert left out), for the hot-rows bench
//! (`support/hot.rs`) and tests/hot_rows.rs: every transaction writes one of the accounts, one of
//! ten tellers and the one branch.

use postgres::Client;

/// The three tables with `accounts` accounts, ten tellers and one branch.
pub fn tables(accounts: i32) -> String {
    format!(
        "create table pgbench_accounts (aid int primary key, bid int, abalance int, filler char(84));
         create table pgbench_tellers (tid int primary key, bid int, tbalance int, filler char(84));
         create table pgbench_branches (bid int primary key, bbalance int, filler char(88));
         insert into pgbench_accounts select g, 1, 0, '' from generate_series(1, {accounts}) g;
         insert into pgbench_tellers select g, 1, 0, '' from generate_series(1, 10) g;
         insert into pgbench_branches values (1, 0, '')"
    )
}

/// The replicated tables' names.
pub const TABLES: [&str; 3] = [
    "public.pgbench_accounts",
    "public.pgbench_tellers",
    "public.pgbench_branches",
];

/// xorshift64: enough randomness for picking rows, no dependency.
pub fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// One TPC-B transaction with a random account of `accounts`, teller and delta.
pub fn transaction(c: &mut Client, rng: &mut u64, accounts: i32) -> Result<(), postgres::Error> {
    let aid = (next(rng) % accounts as u64 + 1) as i32;
    let tid = (next(rng) % 10 + 1) as i32;
    let delta = (next(rng) % 10_001) as i32 - 5000;
    let mut tx = c.transaction()?;
    tx.execute(
        "update pgbench_accounts set abalance = abalance + $2 where aid = $1",
        &[&aid, &delta],
    )?;
    tx.execute(
        "update pgbench_tellers set tbalance = tbalance + $2 where tid = $1",
        &[&tid, &delta],
    )?;
    tx.execute(
        "update pgbench_branches set bbalance = bbalance + $1 where bid = 1",
        &[&delta],
    )?;
    tx.commit()
}
