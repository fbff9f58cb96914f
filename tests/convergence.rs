//! Convergence under random histories: inserts, updates (value coincidences on purpose: four
//! keys, four values), key changes, deletes and truncates on 2 and 3 nodes, interleaved with
//! partial deliveries in random orders (`drain --from --to --limit`), replayed batches and an
//! outage. Afterwards every node holds the same rows; for last-write-wins and node-priority, the
//! rows a model of the rule computes from the history, checked after every step as well.
//!
//! The model is written from the rules' definitions, not from repctl's code: a write's version
//! is its place in the history (writes run one at a time, so commit times follow it), and
//! - last-write-wins: the newer version of a key wins;
//! - node-priority: the version that has seen more writes of the key wins (a count per key, one
//!   more than the writer's own version), then the node listed first, then the newer;
//! - origin-wins: a delivered change always applies; where the target has a change of the same
//!   key not yet sent to the origin, the two were concurrent and the target's is dropped;
//! - target-wins: where the target has such a change, the target keeps its row and sends it to
//!   the origin in their place, applied there without a check; otherwise the change applies
//!   (checked for convergence only, see `Rule::modelled`).
//!
//! A failure prints its seed: `REPCTL_SEED=N cargo test --release --test convergence` runs
//! that history again (`REPCTL_HISTORIES` sets how many histories each case runs).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use common::Setup;
use postgres::Client;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    LastWriteWins,
    NodePriority,
    OriginWins,
    TargetWins,
}

impl Rule {
    fn args(self, nodes: &[&str]) -> Vec<String> {
        let mut a = vec!["--conflict".to_string()];
        match self {
            Rule::LastWriteWins => a.push("last-write-wins".into()),
            Rule::NodePriority => {
                a.push("node-priority".into());
                a.push("--node-priority".into());
                a.push(priority(nodes).join(","));
            }
            Rule::OriginWins => a.push("origin-wins".into()),
            Rule::TargetWins => a.push("target-wins".into()),
        }
        a
    }

    /// Whether the model's rows are checked after every step. target-wins only converges: a batch
    /// holding a resolution and a later change of the same key is decided as one change, where
    /// the model takes them one at a time.
    fn modelled(self) -> bool {
        self != Rule::TargetWins
    }

    /// Whether the rule compares versions (then the model's conflicts are changes that lose).
    fn versioned(self) -> bool {
        matches!(self, Rule::LastWriteWins | Rule::NodePriority)
    }
}

/// node-priority's list: the last node first, so it is not the name order.
fn priority<'a>(nodes: &[&'a str]) -> Vec<&'a str> {
    nodes.iter().rev().copied().collect()
}

/// splitmix64: small, and the same sequence from the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

const KEYS: [i32; 4] = [1, 2, 3, 4];
const VALUES: [i32; 4] = [0, 1, 2, 3];

/// A write's version. Ordered by the rule in `Model::newer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    step: usize,
    node: usize,
    /// How many writes of the key this one has seen, itself included.
    count: u32,
}

/// One row change as it travels: the key, its new value (None: deleted), the version, and
/// whether it is a target-wins resolution (applied without a check).
type Change = (i32, Option<i32>, Version, bool);

/// Per node: every key it has a version of, with its value (None: deleted).
type State = BTreeMap<i32, (Option<i32>, Version)>;

struct Model {
    rule: Rule,
    /// Index into the node list of each node's place in node-priority's list.
    rank: Vec<usize>,
    nodes: Vec<State>,
    /// Per (origin, peer): the changes not delivered yet, in groups that travel in one statement's
    /// order (a key change, a truncate), which a partial delivery never splits.
    queues: BTreeMap<(usize, usize), VecDeque<Vec<Change>>>,
    /// Per node: whether a change ever lost to its version there (it must be in its conflict log).
    lost: Vec<bool>,
}

impl Model {
    fn new(rule: Rule, names: &[&str]) -> Model {
        let order = priority(names);
        Model {
            rule,
            rank: names
                .iter()
                .map(|n| order.iter().position(|o| o == n).unwrap())
                .collect(),
            nodes: vec![State::new(); names.len()],
            queues: BTreeMap::new(),
            lost: vec![false; names.len()],
        }
    }

    /// Whether version `a` beats `b` under the rule.
    fn newer(&self, a: Version, b: Version) -> bool {
        match self.rule {
            Rule::NodePriority => {
                (a.count, std::cmp::Reverse(self.rank[a.node]), a.step)
                    > (b.count, std::cmp::Reverse(self.rank[b.node]), b.step)
            }
            _ => a.step > b.step,
        }
    }

    fn rows(&self, node: usize) -> BTreeMap<i32, i32> {
        self.nodes[node]
            .iter()
            .filter_map(|(k, (v, _))| v.map(|v| (*k, v)))
            .collect()
    }

    /// Node `node` writes at `step`: each (key, new value) of one statement, queued for every peer.
    fn write(&mut self, node: usize, step: usize, changes: &[(i32, Option<i32>)]) {
        let group: Vec<Change> = changes
            .iter()
            .map(|&(k, v)| {
                let seen = self.nodes[node].get(&k).map_or(0, |(_, ver)| ver.count);
                let ver = Version {
                    step,
                    node,
                    count: seen + 1,
                };
                self.nodes[node].insert(k, (v, ver));
                (k, v, ver, false)
            })
            .collect();
        if group.is_empty() {
            return;
        }
        for peer in 0..self.nodes.len() {
            if peer != node {
                self.queues
                    .entry((node, peer))
                    .or_default()
                    .push_back(group.clone());
            }
        }
    }

    /// How many changes a delivery of at least `want` from `from` to `to` takes, whole groups.
    fn take(&self, from: usize, to: usize, want: usize) -> usize {
        let mut n = 0;
        for g in self.queues.get(&(from, to)).into_iter().flatten() {
            if n >= want {
                break;
            }
            n += g.len();
        }
        n
    }

    fn pending(&self, from: usize, to: usize) -> usize {
        self.take(from, to, usize::MAX)
    }

    /// Delivers the oldest `n` changes (whole groups) from `from` to `to`.
    fn deliver(&mut self, from: usize, to: usize, n: usize) {
        let mut done = 0;
        while done < n {
            let Some(group) = self.queues.get_mut(&(from, to)).and_then(|q| q.pop_front()) else {
                break;
            };
            done += group.len();
            for (k, v, ver, resolved) in group {
                let back = self.queues.entry((to, from)).or_default();
                let concurrent = back.iter().flatten().any(|c| c.0 == k);
                let here = self.nodes[to].get(&k).copied();
                let applies = match self.rule {
                    _ if resolved => true,
                    Rule::LastWriteWins | Rule::NodePriority => {
                        here.is_none_or(|(_, here)| self.newer(ver, here))
                    }
                    Rule::OriginWins => true,
                    Rule::TargetWins => !concurrent,
                };
                if !applies {
                    self.lost[to] = true;
                }
                if concurrent && !resolved && !self.rule.versioned() {
                    let back = self.queues.get_mut(&(to, from)).unwrap();
                    for g in back.iter_mut() {
                        g.retain(|c| c.0 != k);
                    }
                    back.retain(|g| !g.is_empty());
                    if self.rule == Rule::TargetWins {
                        let (value, ver) = here.map_or((None, ver), |(v, ver)| (v, ver));
                        back.push_back(vec![(k, value, ver, true)]);
                    }
                }
                if applies {
                    self.nodes[to].insert(k, (v, ver));
                }
            }
        }
    }
}

/// The node's rows, read from its table.
fn rows(c: &mut Client) -> BTreeMap<i32, i32> {
    c.query("select id, v from cv", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn seed() -> u64 {
    std::env::var("REPCTL_SEED")
        .ok()
        .map(|s| s.parse().expect("REPCTL_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn histories() -> usize {
    std::env::var("REPCTL_HISTORIES")
        .ok()
        .map(|s| s.parse().expect("REPCTL_HISTORIES is a number"))
        .unwrap_or(6)
}

/// One random history of `steps` steps on a fresh setup; panics with the seed and the history.
fn history(rule: Rule, names: &[&'static str], seed: u64, steps: usize) {
    let s = Setup::one_cluster(names);
    for n in &s.nodes {
        n.exec("create table cv (v int not null, id int primary key)");
    }
    s.repctl_ok(&["init"], 0);
    let mut args = vec![
        "add-table".to_string(),
        "public.cv".into(),
        "--mode".into(),
        "async".into(),
    ];
    args.extend(rule.args(names));
    s.repctl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), 0);

    let mut rng = Rng(seed);
    let mut model = Model::new(rule, names);
    let mut clients: Vec<Client> = s.nodes.iter().map(|n| n.admin()).collect();
    let mut log: Vec<String> = vec![];
    // The node that is down, and the step it comes back at.
    let mut down: Option<(usize, usize)> = None;
    let fail = |log: &[String], what: String| -> ! {
        panic!(
            "{rule:?} on {names:?}, seed {seed}: {what}\nhistory:\n{}",
            log.join("\n")
        )
    };

    for step in 0..steps {
        if let Some((n, until)) = down
            && step >= until
        {
            s.set_down(names[n], false);
            log.push(format!("{step}: {} is back", names[n]));
            down = None;
        }
        let up = |i: usize| down.is_none_or(|(d, _)| d != i);
        match rng.below(10) {
            0..=5 => {
                let x = rng.below(names.len());
                let c = &mut clients[x];
                let here = rows(c);
                let k = rng.pick(&KEYS);
                let changes: Vec<(i32, Option<i32>)> = match (here.get(&k), rng.below(6)) {
                    (None, _) => {
                        let v = rng.pick(&VALUES);
                        c.execute("insert into cv (id, v) values ($1, $2)", &[&k, &v])
                            .unwrap();
                        vec![(k, Some(v))]
                    }
                    (Some(_), 0) => {
                        c.execute("delete from cv where id = $1", &[&k]).unwrap();
                        vec![(k, None)]
                    }
                    (Some(&v), 1) if KEYS.iter().any(|n| !here.contains_key(n)) => {
                        let to = *KEYS.iter().find(|n| !here.contains_key(n)).unwrap();
                        c.execute("update cv set id = $2 where id = $1", &[&k, &to])
                            .unwrap();
                        vec![(k, None), (to, Some(v))]
                    }
                    (Some(_), 2) if rule.versioned() && rng.below(4) == 0 => {
                        c.batch_execute("truncate cv").unwrap();
                        here.keys().map(|k| (*k, None)).collect()
                    }
                    (Some(&v), _) => {
                        let to = *VALUES
                            .iter()
                            .filter(|n| **n != v)
                            .nth(rng.below(3))
                            .unwrap();
                        c.execute("update cv set v = $2 where id = $1", &[&k, &to])
                            .unwrap();
                        vec![(k, Some(to))]
                    }
                };
                log.push(format!("{step}: {} writes {changes:?}", names[x]));
                model.write(x, step, &changes);
            }
            6..=8 => {
                let from = rng.below(names.len());
                let to = (from + 1 + rng.below(names.len() - 1)) % names.len();
                if !up(from) || !up(to) || model.pending(from, to) == 0 {
                    continue;
                }
                let n = model.take(from, to, 1 + rng.below(3));
                if rng.below(4) == 0 {
                    // A batch applied twice before the origin removes it, as when a drain is cut
                    // off after the peer's commit and run again.
                    let mut origin = s.node(names[from]).admin();
                    let mut peer = s.node(names[to]).admin();
                    let b = repctl::apply::batch::read_images(&mut origin, names[to], n as i64)
                        .unwrap()
                        .unwrap_or_else(|| fail(&log, "nothing queued".into()));
                    if rule.modelled() {
                        assert_eq!(b.seqs.len(), n, "batch size");
                    }
                    for _ in 0..2 {
                        repctl::apply::drain::apply_batch(&mut peer, names[from], &b, &b.seqs)
                            .unwrap_or_else(|e| fail(&log, format!("replay: {e}")));
                    }
                    repctl::apply::drain::settle_applied(
                        &mut origin,
                        &mut peer,
                        names[from],
                        names[to],
                    )
                    .unwrap();
                    log.push(format!(
                        "{step}: {n} from {} to {} applied twice",
                        names[from], names[to]
                    ));
                } else {
                    s.repctl_ok(
                        &[
                            "drain",
                            "--from",
                            names[from],
                            "--to",
                            names[to],
                            "--limit",
                            &n.to_string(),
                        ],
                        0,
                    );
                    log.push(format!(
                        "{step}: drain {n} from {} to {}",
                        names[from], names[to]
                    ));
                }
                model.deliver(from, to, n);
            }
            _ => {
                if down.is_none() && names.len() > 1 {
                    let n = rng.below(names.len());
                    s.set_down(names[n], true);
                    log.push(format!("{step}: {} goes down", names[n]));
                    down = Some((n, step + 3 + rng.below(5)));
                }
            }
        }
        if rule.modelled() {
            for (i, c) in clients.iter_mut().enumerate() {
                let (got, want) = (rows(c), model.rows(i));
                if got != want {
                    fail(
                        &log,
                        format!(
                            "after step {step}, {} has {got:?}, the model {want:?}",
                            names[i]
                        ),
                    );
                }
            }
        }
    }
    if let Some((n, _)) = down {
        s.set_down(names[n], false);
    }
    // Until nothing is queued: target-wins sends rows back as it resolves. drain takes the pairs
    // in the config's order, as the model does.
    for _ in 0..3 {
        let out = s.repctl_ok(&["drain"], 0);
        log.push(format!("drain:\n{out}"));
        for from in 0..names.len() {
            for to in 0..names.len() {
                if from != to {
                    let left = model.pending(from, to);
                    model.deliver(from, to, left);
                }
            }
        }
    }
    let first = rows(&mut clients[0]);
    for (i, c) in clients.iter_mut().enumerate() {
        let got = rows(c);
        if got != first {
            fail(
                &log,
                format!("{} has {got:?}, {} has {first:?}", names[i], names[0]),
            );
        }
        if rule.modelled() && got != model.rows(i) {
            fail(
                &log,
                format!("{} has {got:?}, the model {:?}", names[i], model.rows(i)),
            );
        }
        let logged = s
            .node(names[i])
            .count("select count(*) from repctl.conflict");
        if model.lost[i] && logged == 0 {
            fail(
                &log,
                format!(
                    "a change lost on {} and its conflict log is empty",
                    names[i]
                ),
            );
        }
        let queued = s.node(names[i]).count("select count(*) from repctl.queue");
        if queued != 0 {
            fail(
                &log,
                format!("{} still has {queued} change(s) queued", names[i]),
            );
        }
    }
    s.repctl_ok(&["verify"], 0);
}

fn run(rule: Rule, names: &[&'static str]) {
    let base = seed();
    println!("{rule:?} on {names:?}: seeds from {base} (REPCTL_SEED={base} repeats them)");
    for i in 0..histories() {
        history(rule, names, base.wrapping_add(i as u64), 30);
    }
}

/// The case issue 14 reported: n2 changes a row twice, n1 once, later; the delivery of n2's first
/// change alone finds a value equal to n1's row.
#[test]
fn last_write_wins_with_a_value_coincidence() {
    let s = Setup::one_cluster(&["n1", "n2"]);
    for n in &s.nodes {
        n.exec("create table cv (v int not null, id int primary key)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            "public.cv",
            "--mode",
            "async",
            "--conflict",
            "last-write-wins",
        ],
        0,
    );
    s.node("n1").exec("insert into cv values (0, 1)");
    s.repctl_ok(&["drain"], 0);
    s.node("n2").exec("update cv set v = 1 where id = 1");
    s.node("n2").exec("update cv set v = 2 where id = 1");
    s.node("n1").exec("update cv set v = 1 where id = 1");
    s.repctl_ok(&["drain", "--from", "n2", "--limit", "1"], 0);
    s.repctl_ok(&["drain"], 0);
    for n in ["n1", "n2"] {
        assert_eq!(
            s.node(n).count("select v::bigint from cv where id = 1"),
            1,
            "the newest write on {n}"
        );
        assert!(
            s.node(n).count("select count(*) from repctl.conflict") > 0,
            "conflict logged on {n}"
        );
    }
    s.repctl_ok(&["verify"], 0);
}

#[test]
fn last_write_wins_on_two_nodes() {
    run(Rule::LastWriteWins, &["a", "b"]);
}

#[test]
fn last_write_wins_on_three_nodes() {
    run(Rule::LastWriteWins, &["a", "b", "c"]);
}

#[test]
fn node_priority_on_two_nodes() {
    run(Rule::NodePriority, &["a", "b"]);
}

#[test]
fn node_priority_on_three_nodes() {
    run(Rule::NodePriority, &["a", "b", "c"]);
}

#[test]
fn origin_wins_on_two_nodes() {
    run(Rule::OriginWins, &["a", "b"]);
}

#[test]
fn target_wins_on_two_nodes() {
    run(Rule::TargetWins, &["a", "b"]);
}
