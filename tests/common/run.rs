//! `repctl run` as a child process of a test.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Setup;

/// A running `repctl run`, killed if a test fails before stopping it (else it would outlive the test).
/// Its log is read as it comes (a full pipe would block it), for `stop_run`.
pub struct Run(Option<Child>, Option<JoinHandle<String>>);

impl Run {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn start_run(s: &Setup, extra: &[&str]) -> Run {
    let mut args = vec!["run", "--stats-every", "1"];
    args.extend_from_slice(extra);
    let mut child = s
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start repctl run");
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    Run(Some(child), Some(log))
}

pub fn total_pending(s: &Setup) -> Option<i64> {
    let out = s.repctl(&["lag", "--json"]);
    let pairs: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    // Null while the origin is down: unknown, not nothing.
    pairs.iter().map(|p| p["pending"].as_i64()).sum()
}

pub fn wait_drained(s: &Setup, within: Duration) {
    let deadline = Instant::now() + within;
    while total_pending(s) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "queues not drained within {within:?}: {:?}",
            total_pending(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn stop_run(mut run: Run) -> String {
    let mut child = run.0.take().expect("running");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    let log = run.1.take().unwrap().join().unwrap();
    assert!(status.success(), "run exited with {status:?}:\n{log}");
    log
}
