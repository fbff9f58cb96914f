//! Prometheus text exposition of `repctl run`'s state, on a plain TCP listener (one GET endpoint
//! needs no HTTP framework).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use log::{debug, info};

use super::run::Metrics;

/// Renders the metrics in Prometheus text format 0.0.4.
pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let label =
        |from: &str, to: &str| format!("{{from=\"{}\",to=\"{}\"}}", escape(from), escape(to));
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    family(
        "repctl_pending_changes",
        "gauge",
        "Changes queued for the peer and not yet delivered.",
        m.pairs
            .iter()
            .filter_map(|p| Some((label(&p.from, &p.to), p.pending? as f64)))
            .collect(),
    );
    family(
        "repctl_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest pending change (0 when nothing is pending).",
        m.pairs
            .iter()
            .map(|p| (label(&p.from, &p.to), p.oldest_pending_age_s.unwrap_or(0.0)))
            .collect(),
    );
    family(
        "repctl_delivered_total",
        "counter",
        "Changes delivered by drain and run.",
        m.pairs
            .iter()
            .filter_map(|p| Some((label(&p.from, &p.to), p.delivered_total? as f64)))
            .collect(),
    );
    family(
        "repctl_last_delivery_timestamp_seconds",
        "gauge",
        "Unix time of the last delivery by drain or run (0 if never).",
        m.pairs
            .iter()
            .map(|p| (label(&p.from, &p.to), p.last_delivery_epoch.unwrap_or(0.0)))
            .collect(),
    );
    family(
        "repctl_parked_changes",
        "gauge",
        "Changes the peer refused, parked on the origin (repctl queue parked).",
        m.pairs
            .iter()
            .filter_map(|p| Some((label(&p.from, &p.to), p.parked? as f64)))
            .collect(),
    );
    family(
        "repctl_pair_stopped",
        "gauge",
        "1 when the pair is stopped at a change the peer refused (repctl queue), else 0.",
        m.pairs
            .iter()
            .filter(|p| p.pending.is_some())
            .map(|p| {
                (
                    label(&p.from, &p.to),
                    f64::from(u8::from(p.stopped.is_some())),
                )
            })
            .collect(),
    );
    family(
        "repctl_apply_errors_total",
        "counter",
        "Batches this run could not deliver (peer refused a change or the connection failed).",
        m.apply_errors
            .iter()
            .map(|((f, t), n)| (label(f, t), *n as f64))
            .collect(),
    );
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `render` on `addr` from a background thread.
pub fn serve(addr: &str, metrics: Arc<Mutex<Metrics>>) -> Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--metrics-addr {addr}: cannot listen"))?;
    info!("metrics on http://{}/metrics", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = render(&metrics.lock().expect("metrics lock"));
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(response.as_bytes()) {
                debug!("metrics: {e}");
            }
        }
    });
    Ok(())
}
