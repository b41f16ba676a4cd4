//! `make bench`: measures the release binaries side by side, in one run on one machine, and
//! writes `bench/RESULTS.md` and `bench/results.json`. Targets are reported next to the figures;
//! a miss is reported, not hidden. Nothing here asserts a time.
//!
//! Round trips are what dominates on AWS, and loopback hides them: the release is played twice,
//! once with the local endpoint adding `--latency-ms` (default 50) to every call, once with none.
//! A "round trip" is one link of the longest chain of calls in which each was sent after the one
//! before it was answered: calls made side by side count once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover::Function;
use cutover_tests::endpoint::{
    is_mutating_elb, is_mutation, round_trips, round_trips_before_product_moved, Call,
};
use cutover_tests::lambda::FUNCTIONS;
use cutover_tests::moto::repo_root;
use cutover_tests::runtime_api::RuntimeApi;
use cutover_tests::{fixture, job_event, sample_event, Local};
use serde_json::{json, Value};

mod calls;
mod init;
mod process;
mod release;
mod report;
mod size;

use calls::*;
use init::*;
use process::*;
use release::*;
use report::*;
use size::*;

const SERVICE: &str = "mobile-zum-api";
const SPAWNS: usize = 30;
const INVOCATIONS: usize = 20;
const DEFAULT_LATENCY_MS: u64 = 50;
/// The bench's baseline binary (`bench/hello-lambda`).
const HELLO: &str = "hello-lambda";
fn release_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("release")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[derive(Default)]
struct Stats(pub(crate) Vec<f64>);

impl Stats {
    fn pick(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
    fn json(&self) -> Value {
        json!({"n": self.0.len(), "min_ms": self.pick(0.0), "median_ms": self.pick(0.5), "p95_ms": self.pick(0.95)})
    }
}

/// One function binary serving a runtime API of its own.

#[tokio::main]
async fn main() {
    let latency_ms: u64 = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => DEFAULT_LATENCY_MS,
        [flag, n] if flag == "--latency-ms" => n.parse().expect("--latency-ms takes milliseconds"),
        [flag, a, b] if flag == "--compare-init" => return compare_init(a, b).await,
        other => panic!(
            "usage: cutover-bench [--latency-ms N] | --compare-init BINARY BINARY (got {other:?})"
        ),
    };
    let latency = Duration::from_millis(latency_ms);
    let settings_for_init = {
        let (local, _service, settings) = world(2, 2).await;
        drop(local);
        settings
    };
    eprintln!("bench: init durations ({SPAWNS} spawns per binary, the hello-world among them)…");
    let init = init_durations(&settings_for_init).await;
    eprintln!("bench: python baseline…");
    let python = python_baseline();
    eprintln!("bench: a release through the binaries at {latency_ms} ms per call…");
    let at_latency = release_path(latency).await;
    eprintln!("bench: the same release at 0 ms per call…");
    let at_zero = release_path(Duration::ZERO).await;
    eprintln!("bench: scale at {latency_ms} ms per call…");
    let scale = scale(latency).await;
    let read = |file: &str| {
        std::fs::read_to_string(repo_root().join("bench/out").join(file))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let results = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "latency_ms": latency_ms,
        "init": init,
        "python_baseline_init": python,
        "release_at_latency": at_latency,
        "release_at_zero": at_zero,
        "scale": scale,
        "size": sizes(),
        "build": noop_build(),
        "build_release_log": read("release-build-time.txt"),
        "build_zip_log": read("zip-build-time.txt"),
    });
    let dir = repo_root().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("RESULTS.md"), markdown(&results)).unwrap();
    println!("{}", markdown(&results));
}
