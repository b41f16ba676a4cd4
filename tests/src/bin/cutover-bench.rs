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
use cutover_tests::endpoint::{is_mutating_elb, is_mutation, Call};
use cutover_tests::lambda::FUNCTIONS;
use cutover_tests::moto::repo_root;
use cutover_tests::runtime_api::RuntimeApi;
use cutover_tests::{fixture, job_event, sample_event, Local};
use serde_json::{json, Value};

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
struct Stats(Vec<f64>);

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
struct Running {
    child: Child,
    api: RuntimeApi,
}

impl Running {
    async fn spawn(function: Function, env: &[(String, String)]) -> (Running, Instant) {
        Running::spawn_binary(function.as_str(), env).await
    }

    async fn spawn_binary(binary: &str, env: &[(String, String)]) -> (Running, Instant) {
        Running::spawn_path(&release_dir().join(binary), env).await
    }

    async fn spawn_path(path: &Path, env: &[(String, String)]) -> (Running, Instant) {
        let binary = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("function");
        let api = RuntimeApi::start().await;
        let started = Instant::now();
        let child = Command::new(path)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", binary)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e} (run `make bench`, which builds it)"));
        (Running { child, api }, started)
    }

    async fn wait_ready(&self, started: Instant) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(at) = self.api.first_next() {
                return at - started;
            }
            assert!(
                Instant::now() < deadline,
                "the function never asked for work"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Peak resident set size so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        (kib / 1024.0 * 10.0).round() / 10.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base_env(local: Option<&Local>, settings: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("AWS_REGION".into(), fixture::REGION.into()),
        ("AWS_ACCESS_KEY_ID".into(), "local".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "local".into()),
        ("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    if let Some(local) = local {
        env.push(("AWS_ENDPOINT_URL".into(), local.endpoint.url.clone()));
        env.push(("CUTOVER_SNS_TOPIC_ARN".into(), local.base.topic_arn.clone()));
    }
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// Spawn → first `/next`, per function and for the bare hello-world, interleaved so that the
/// machine's load falls on all of them alike.
async fn init_durations(settings: &[(&str, String)]) -> Value {
    let binaries: Vec<&str> = FUNCTIONS
        .iter()
        .map(|f| f.as_str())
        .chain([HELLO])
        .collect();
    let mut stats: BTreeMap<&str, Stats> = BTreeMap::new();
    for _ in 0..SPAWNS {
        for binary in &binaries {
            let (running, started) = Running::spawn_binary(binary, &base_env(None, settings)).await;
            let init = running.wait_ready(started).await;
            stats.entry(binary).or_default().0.push(ms(init));
        }
    }
    json!(stats
        .iter()
        .map(|(binary, s)| (binary.to_string(), s.json()))
        .collect::<BTreeMap<_, _>>())
}

/// Spawn → the first invocation answered: init with the work it defers (settings, clients) and
/// one job on the finished world; for the hello-world, one event answered with `{}`.
async fn init_and_first_invocation(local: &Local, settings: &[(&str, String)]) -> Value {
    let env = base_env(Some(local), settings);
    let mut out = BTreeMap::new();
    for function in FUNCTIONS {
        let mut stats = Stats::default();
        for _ in 0..SPAWNS / 3 {
            let (running, started) = Running::spawn(function, &env).await;
            let job_id = local.next_job_id();
            let params = json!({"service": SERVICE, "release": "r1", "action": "release"});
            let (ok, _) = running
                .api
                .invoke(&job_event(function, &job_id, &params, None))
                .await;
            assert!(ok, "{}: the first invocation failed", function.as_str());
            stats.0.push(ms(started.elapsed()));
        }
        out.insert(function.as_str().to_owned(), stats.json());
    }
    let mut stats = Stats::default();
    for _ in 0..SPAWNS / 3 {
        let (running, started) = Running::spawn_binary(HELLO, &env).await;
        let (ok, _) = running.api.invoke(&json!({})).await;
        assert!(ok, "the hello-world failed");
        stats.0.push(ms(started.elapsed()));
    }
    out.insert(HELLO.to_owned(), stats.json());
    json!(out)
}

fn python_baseline() -> Value {
    let python = repo_root().join(".venv/bin/python");
    let script = "import boto3\ns = boto3.session.Session(region_name='us-east-1')\nfor name in ['ec2', 'elbv2', 'route53', 'codepipeline', 'sns']:\n    s.client(name)\n";
    let mut stats = Stats::default();
    for _ in 0..SPAWNS {
        let started = Instant::now();
        let status = Command::new(&python)
            .args(["-c", script])
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .status()
            .expect("python with boto3 (make setup)");
        assert!(status.success());
        stats.0.push(ms(started.elapsed()));
    }
    stats.json()
}

/// One CodePipeline action played through a running binary, continuations included.
struct Played {
    took: Duration,
    /// Each invocation's calls, as a range of `calls()`.
    invocations: Vec<std::ops::Range<usize>>,
}

async fn action(local: &Local, running: &Running, function: Function, params: &Value) -> Played {
    let started = Instant::now();
    let mut token: Option<String> = None;
    let mut invocations = Vec::new();
    loop {
        let job_id = local.next_job_id();
        let mark = local.endpoint.mark();
        let (ok, body) = running
            .api
            .invoke(&job_event(function, &job_id, params, token.as_deref()))
            .await;
        invocations.push(mark..local.endpoint.mark());
        assert!(
            ok,
            "{}: {}",
            function.as_str(),
            String::from_utf8_lossy(&body)
        );
        let ack = local.endpoint.ack_for(&job_id).expect("acknowledged");
        assert!(
            ack.message.is_none(),
            "{}: {:?}",
            function.as_str(),
            ack.message
        );
        token = ack.continuation_token;
        if token.is_none() || invocations.len() > 10 {
            return Played {
                took: started.elapsed(),
                invocations,
            };
        }
    }
}

/// The longest chain of `calls` in which each call was sent after the one before it was
/// answered: the sequential round trips they cost. Calls made side by side count once.
fn round_trips(calls: &[Call]) -> usize {
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|&i| calls[i].received);
    let mut depth = vec![0usize; calls.len()];
    for (k, &i) in order.iter().enumerate() {
        depth[i] = 1 + order[..k]
            .iter()
            .filter(|&&j| calls[j].answered <= calls[i].received)
            .map(|&j| depth[j])
            .max()
            .unwrap_or(0);
    }
    depth.into_iter().max().unwrap_or(0)
}

/// Round trips made before the first call that moved product (`None` when none did).
fn round_trips_before_product_moved(calls: &[Call], product_rule: &str) -> Option<usize> {
    let moved = calls.iter().find(|c| c.moves_rule(product_rule))?;
    let before: Vec<Call> = calls
        .iter()
        .filter(|c| c.answered <= moved.received)
        .cloned()
        .collect();
    Some(round_trips(&before))
}

fn counts(local: &Local, played: &Played, product_rule: &str, latency: Duration) -> Value {
    let calls = local.endpoint.calls();
    let all = played.invocations.first().map_or(0, |r| r.start)
        ..played.invocations.last().map_or(0, |r| r.end);
    let mut counts = call_counts(&calls[all]);
    let per_invocation: Vec<usize> = played
        .invocations
        .iter()
        .map(|r| round_trips(&calls[r.clone()]))
        .collect();
    let before_move = played
        .invocations
        .iter()
        .find_map(|r| round_trips_before_product_moved(&calls[r.clone()], product_rule));
    let product_moves = played
        .invocations
        .iter()
        .flat_map(|r| &calls[r.clone()])
        .filter(|c| c.moves_rule(product_rule))
        .count();
    counts["wall_ms"] = json!(ms(played.took));
    counts["invocations"] = json!(played.invocations.len());
    counts["round_trips_per_invocation"] = json!(per_invocation);
    counts["round_trips_max"] = json!(per_invocation.iter().max().copied().unwrap_or(0));
    counts["round_trips_before_product_moved"] = json!(before_move);
    counts["product_route_mutations"] = json!(product_moves);
    if !latency.is_zero() {
        counts["wall_over_latency"] =
            json!((played.took.as_secs_f64() / latency.as_secs_f64() * 10.0).round() / 10.0);
    }
    counts
}

fn call_counts(calls: &[Call]) -> Value {
    let mutations = calls.iter().filter(|c| is_mutation(c)).count();
    let elb_mutations = calls.iter().filter(|c| is_mutating_elb(c)).count();
    let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls {
        *by_action
            .entry(
                call.action.split(' ').next().unwrap_or_default().to_owned()
                    + &route53_suffix(&call.action),
            )
            .or_default() += 1;
    }
    json!({"total": calls.len(), "reads": calls.len() - mutations, "mutations": mutations, "elb_mutations": elb_mutations, "by_action": by_action})
}

fn route53_suffix(action: &str) -> String {
    if action.contains("/rrset") {
        " rrset".into()
    } else if action.contains("/hostedzone/") {
        " hostedzone".into()
    } else {
        String::new()
    }
}

async fn world(
    count: u32,
    eips: usize,
) -> (
    Local,
    cutover_tests::ServiceFixture,
    Vec<(&'static str, String)>,
) {
    let local = cutover_tests::local(eips).await;
    let service = fixture::seed_service(&local.clients, &local.base, SERVICE, 10).await;
    let settings = vec![(
        "MOBILE_ZUM_API",
        fixture::settings_json(&local.base, count, eips, json!({})),
    )];
    (local, service, settings)
}

/// Whether a step runs in a process of its own, started for it (nothing learned yet).
#[derive(Clone, Copy, PartialEq)]
enum Container {
    Cold,
    Warm,
}

/// A whole release, its rollback and the cleanup, through the binaries, at `latency` per call.
async fn release_path(latency: Duration) -> Value {
    let (local, service, settings) = world(3, 2).await;
    local.endpoint.set_latency(latency);
    let env = base_env(Some(&local), &settings);
    let params = |release: &str, action: &str| json!({"service": SERVICE, "release": release, "action": action});
    use Container::*;
    use Function::*;
    let steps = [
        ("first release: provision", Provision, "r0", "release", Cold),
        (
            "first release: register-target",
            RegisterTarget,
            "r0",
            "release",
            Cold,
        ),
        (
            "first release: switch-listener",
            SwitchListener,
            "r0",
            "release",
            Cold,
        ),
        ("provision", Provision, "r1", "release", Warm),
        ("register-target", RegisterTarget, "r1", "release", Warm),
        (
            "switch-listener release, cold",
            SwitchListener,
            "r1",
            "release",
            Cold,
        ),
        (
            "switch-listener rollback, cold",
            SwitchListener,
            "r1",
            "rollback",
            Cold,
        ),
        (
            "switch-listener release, warm",
            SwitchListener,
            "r1",
            "release",
            Warm,
        ),
        (
            "switch-listener rollback, warm",
            SwitchListener,
            "r1",
            "rollback",
            Warm,
        ),
        (
            "switch-listener release again, warm",
            SwitchListener,
            "r1",
            "release",
            Warm,
        ),
    ];
    let mut runners: BTreeMap<&str, Running> = BTreeMap::new();
    let mut rows = Vec::new();
    for (label, function, id, verb, container) in steps {
        if container == Cold || !runners.contains_key(function.as_str()) {
            let (running, started) = Running::spawn(function, &env).await;
            running.wait_ready(started).await;
            runners.insert(function.as_str(), running);
        }
        let played = action(
            &local,
            &runners[function.as_str()],
            function,
            &params(id, verb),
        )
        .await;
        let mut row = counts(&local, &played, &service.product_rule, latency);
        row["step"] = json!(label);
        rows.push(row);
    }

    // From the start of a warm switch to the product ModifyRule's answer.
    let mut to_modify = Stats::default();
    let runner = &runners["switch-listener"];
    for n in 0..10 {
        let verb = if n % 2 == 0 { "rollback" } else { "release" };
        let mark = local.endpoint.mark();
        let started = Instant::now();
        action(&local, runner, SwitchListener, &params("r1", verb)).await;
        let answered = local
            .endpoint
            .rule_moves(mark, &service.product_rule)
            .first()
            .map(|c| c.answered)
            .expect("the switch moved product");
        to_modify.0.push(ms(answered - started));
    }
    // The old fleet goes only now: the timing loop above needs it for its rollbacks.
    let (cleanup, started) = Running::spawn(Cleanup, &env).await;
    cleanup.wait_ready(started).await;
    let played = action(&local, &cleanup, Cleanup, &params("r1", "release")).await;
    let mut row = counts(&local, &played, &service.product_rule, latency);
    row["step"] = json!("cleanup");
    rows.push(row);
    runners.insert("cleanup", cleanup);

    let mut out = json!({"latency_ms": ms(latency), "steps": rows, "switch_to_modify_rule": to_modify.json()});
    if latency.is_zero() {
        // Repeated invocations of each function on the finished world (replays: read, plan, ack).
        let mut replays = BTreeMap::new();
        let mut rss = BTreeMap::new();
        for function in FUNCTIONS {
            let running = &runners[function.as_str()];
            let mut stats = Stats::default();
            for _ in 0..INVOCATIONS {
                let played = action(&local, running, function, &params("r1", "release")).await;
                stats.0.push(ms(played.took));
            }
            replays.insert(function.as_str(), stats.json());
            rss.insert(function.as_str(), running.peak_rss_mib());
        }
        out["replay_latency"] = json!(replays);
        out["peak_rss_mib"] = json!(rss);
        out["init_and_first_invocation"] = init_and_first_invocation(&local, &settings).await;
    }
    out
}

/// Provision of 3 and of 50 instances, and the cleanup of the 50 after a failed execution, at
/// `latency` per call.
async fn scale(latency: Duration) -> Value {
    let mut out = BTreeMap::new();
    for count in [3u32, 50] {
        let (local, service, settings) = world(count, 0).await;
        local.endpoint.set_latency(latency);
        let env = base_env(Some(&local), &settings);
        let (provision, started) = Running::spawn(Function::Provision, &env).await;
        provision.wait_ready(started).await;
        let played = action(
            &local,
            &provision,
            Function::Provision,
            &json!({"service": SERVICE, "release": "s1"}),
        )
        .await;
        let mut row = counts(&local, &played, &service.product_rule, latency);
        let calls = local.endpoint.calls();
        let launches: Vec<Call> = played
            .invocations
            .iter()
            .flat_map(|r| calls[r.clone()].iter())
            .filter(|c| c.action == "RunInstances")
            .cloned()
            .collect();
        row["round_trips_of_launches"] = json!(round_trips(&launches));
        out.insert(format!("provision {count}"), row);
        if count == 50 {
            let (cleanup, started) = Running::spawn(Function::Cleanup, &env).await;
            cleanup.wait_ready(started).await;
            let mut event = sample_event("cleanup-pipeline-failed.json");
            event["detail"]["execution-id"] = json!("s1");
            let mark = local.endpoint.mark();
            let started = Instant::now();
            let (ok, body) = cleanup.api.invoke(&event).await;
            assert!(ok, "{}", String::from_utf8_lossy(&body));
            let played = Played {
                took: started.elapsed(),
                invocations: std::iter::once(mark..local.endpoint.mark()).collect(),
            };
            out.insert(
                "cleanup 50".into(),
                counts(&local, &played, &service.product_rule, latency),
            );
        }
    }
    json!(out)
}

fn sizes() -> Value {
    let mut out = BTreeMap::new();
    for function in FUNCTIONS {
        let binary = std::fs::metadata(release_dir().join(function.as_str()))
            .map(|m| m.len())
            .unwrap_or(0);
        let zip_dir = release_dir()
            .parent()
            .unwrap()
            .join("lambda")
            .join(function.as_str());
        let zip = std::fs::metadata(zip_dir.join("bootstrap.zip"))
            .map(|m| m.len())
            .ok();
        // cargo lambda leaves the zipped binary under the triple it cross-compiled for.
        let arm64 = release_dir()
            .parent()
            .unwrap()
            .join("aarch64-unknown-linux-gnu/release")
            .join(function.as_str());
        let arch = zip.map(|_| {
            if arm64.exists() {
                file_arch(&arm64)
            } else {
                "x86_64".to_owned()
            }
        });
        out.insert(
            function.as_str(),
            json!({"binary_bytes": binary, "zip_bytes": zip, "zip_arch": arch}),
        );
    }
    json!(out)
}

fn file_arch(path: &Path) -> String {
    // ELF e_machine at offset 18: 0xB7 aarch64, 0x3E x86_64.
    match std::fs::read(path).ok().and_then(|b| b.get(18).copied()) {
        Some(0xB7) => "arm64".into(),
        Some(0x3E) => "x86_64".into(),
        _ => "unknown".into(),
    }
}

fn noop_build() -> Value {
    let started = Instant::now();
    let status = Command::new("cargo")
        .args(["build", "--workspace", "--locked", "--quiet"])
        .current_dir(repo_root())
        .status();
    json!({"noop_debug_build_s": started.elapsed().as_secs_f64(), "ok": status.map(|s| s.success()).unwrap_or(false)})
}

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

/// Init of two builds of one function (say opt-level "s" and "z"), spawns interleaved, and
/// their sizes: printed, not written to the results (a one-off comparison outside `make bench`).
async fn compare_init(a: &str, b: &str) {
    let (local, _service, settings) = world(2, 2).await;
    drop(local);
    let env = base_env(None, &settings);
    let mut stats = [Stats::default(), Stats::default()];
    for _ in 0..SPAWNS {
        for (n, binary) in [a, b].iter().enumerate() {
            let (running, started) = Running::spawn_path(Path::new(binary), &env).await;
            stats[n].0.push(ms(running.wait_ready(started).await));
        }
    }
    for (n, binary) in [a, b].iter().enumerate() {
        let bytes = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
        println!("{binary}: {bytes} bytes, init {}", stats[n].json());
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn markdown(r: &Value) -> String {
    let latency = r["latency_ms"].as_u64().unwrap_or(0);
    let mut md = String::from("# cutover benchmark\n\nWritten by `make bench` (`tests/src/bin/cutover-bench.rs`); every figure below comes from one run on one machine.\n\n");
    let python_median = num(&r["python_baseline_init"]["median_ms"]);
    let hello_median = num(&r["init"][HELLO]["median_ms"]);
    md.push_str("## Init (spawn → first `/runtime/invocation/next`), release x86_64, interleaved spawns\n\n| binary | min ms | median ms | p95 ms | median ≤ 1.5× hello-world | ≤ 1/25 of Python |\n|---|---|---|---|---|---|\n");
    for binary in FUNCTIONS.iter().map(|f| f.as_str()).chain([HELLO]) {
        let s = &r["init"][binary];
        let median = num(&s["median_ms"]);
        let (vs_hello, vs_python) = if binary == HELLO {
            (String::new(), String::new())
        } else {
            (
                format!(
                    "{} ({:.2}×)",
                    verdict(median <= 1.5 * hello_median),
                    median / hello_median
                ),
                format!(
                    "{} (1/{:.0})",
                    verdict(median * 25.0 <= python_median),
                    python_median / median
                ),
            )
        };
        md.push_str(&format!(
            "| {binary} | {} | {} | {} | {vs_hello} | {vs_python} |\n",
            s["min_ms"], s["median_ms"], s["p95_ms"]
        ));
    }
    let p = &r["python_baseline_init"];
    md.push_str(&format!(
        "| Python baseline (boto3 + 5 clients) | {} | {} | {} | | |\n\n",
        p["min_ms"], p["median_ms"], p["p95_ms"]
    ));
    md.push_str("Init together with the first invocation (spawn → first job answered on the finished world at 0 ms per call; the hello-world answers `{}`), so work deferred out of init still counts:\n\n| binary | median ms | p95 ms |\n|---|---|---|\n");
    if let Some(first) = r["release_at_zero"]["init_and_first_invocation"].as_object() {
        for (binary, s) in first {
            md.push_str(&format!(
                "| {binary} | {} | {} |\n",
                s["median_ms"], s["p95_ms"]
            ));
        }
    }

    md.push_str(&format!("\n## A release at {latency} ms per call (the local endpoint adds it to every call), and at 0 ms\n\nRound trips: the longest chain of calls each sent after the one before it was answered (calls made side by side count once), per invocation; \"before product moved\": the chain before the product `ModifyRule` was sent. A cold step runs in a process started for it; a warm one in a process that has seen the service.\n\n| step | invocations | calls | reads | mutations | round trips (max per invocation) | before product moved | product moves | wall ms at {latency} ms | wall ÷ latency | wall ms at 0 ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n"));
    let steps = r["release_at_latency"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let zero = r["release_at_zero"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (c, z) in steps.iter().zip(&zero) {
        let is_switch = c["step"].as_str().unwrap_or_default().starts_with("switch")
            || c["step"]
                .as_str()
                .unwrap_or_default()
                .ends_with("switch-listener");
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c["step"].as_str().unwrap_or_default(),
            c["invocations"],
            c["total"],
            c["reads"],
            c["mutations"],
            c["round_trips_max"],
            if is_switch {
                c["round_trips_before_product_moved"].to_string()
            } else {
                "-".into()
            },
            if is_switch {
                c["product_route_mutations"].to_string()
            } else {
                "-".into()
            },
            c["wall_ms"],
            c["wall_over_latency"],
            z["wall_ms"],
        ));
    }
    let row = |label: &str| {
        steps
            .iter()
            .find(|c| c["step"] == json!(label))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let before = |label: &str| {
        row(label)["round_trips_before_product_moved"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    let wall = |label: &str| num(&row(label)["wall_ms"]);
    let cold = [
        "switch-listener release, cold",
        "switch-listener rollback, cold",
    ];
    let warm = [
        "switch-listener release, warm",
        "switch-listener rollback, warm",
    ];
    md.push_str("\nTargets (switch-listener):\n\n");
    md.push_str(&format!(
        "- ≤ 4 round trips before product moves from a cold start: {} ({}, {})\n",
        verdict(cold.iter().all(|l| before(l) <= 4)),
        before(cold[0]),
        before(cold[1])
    ));
    md.push_str(&format!(
        "- ≤ 2 in a warm container: {} ({}, {})\n",
        verdict(warm.iter().all(|l| before(l) <= 2)),
        before(warm[0]),
        before(warm[1])
    ));
    let walls: Vec<f64> = cold.iter().chain(&warm).map(|l| wall(l)).collect();
    md.push_str(&format!(
        "- ≤ 600 ms wall at 50 ms per call{}: {} ({} ms)\n",
        if latency == 50 {
            ""
        } else {
            " (this run used another latency)"
        },
        verdict(latency == 50 && walls.iter().all(|w| *w <= 600.0)),
        walls
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    md.push_str(&format!(
        "- exactly one production-moving call per switch: {}\n",
        verdict(
            cold.iter()
                .chain(&warm)
                .all(|l| row(l)["product_route_mutations"] == json!(1))
        )
    ));
    let others = [
        "first release: provision",
        "first release: register-target",
        "provision",
        "register-target",
        "cleanup",
    ];
    md.push_str(&format!(
        "\nTarget (register-target, provision COUNT 3, cleanup): ≤ 6 round trips per invocation: {} ({})\n",
        verdict(others.iter().all(|l| row(l)["round_trips_max"].as_u64().unwrap_or(u64::MAX) <= 6)),
        others.iter().map(|l| format!("{l}: {}", row(l)["round_trips_per_invocation"])).collect::<Vec<_>>().join("; ")
    ));
    let t = &r["release_at_latency"]["switch_to_modify_rule"];
    let t0 = &r["release_at_zero"]["switch_to_modify_rule"];
    md.push_str(&format!(
        "\nFrom the start of a warm switch-listener invocation to the product `ModifyRule` answer: median {} ms (p95 {}) at {latency} ms per call, median {} ms (p95 {}) at 0 ms (n = {}).\n\n",
        t["median_ms"], t["p95_ms"], t0["median_ms"], t0["p95_ms"], t["n"]
    ));

    md.push_str("## Replays on the finished world (0 ms per call) and memory\n\n| function | median ms | p95 ms | peak RSS MiB | RSS ≤ 30 MiB |\n|---|---|---|---|---|\n");
    for function in FUNCTIONS {
        let s = &r["release_at_zero"]["replay_latency"][function.as_str()];
        let rss = num(&r["release_at_zero"]["peak_rss_mib"][function.as_str()]);
        md.push_str(&format!(
            "| {} | {} | {} | {rss} | {} |\n",
            function.as_str(),
            s["median_ms"],
            s["p95_ms"],
            verdict(rss <= 30.0)
        ));
    }

    md.push_str(&format!("\n## Scale at {latency} ms per call\n\n| run | invocations | calls | RunInstances | round trips per invocation | round trips of the launches | wall ms |\n|---|---|---|---|---|---|---|\n"));
    if let Some(runs) = r["scale"].as_object() {
        for (label, c) in runs {
            md.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | {} |\n",
                c["invocations"],
                c["total"],
                c["by_action"]["RunInstances"].as_u64().unwrap_or(0),
                c["round_trips_per_invocation"],
                c.get("round_trips_of_launches")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                c["wall_ms"],
            ));
        }
    }
    let p3 = &r["scale"]["provision 3"];
    let p50 = &r["scale"]["provision 50"];
    md.push_str(&format!(
        "\nTargets: provision COUNT 3 ≤ 6 round trips per invocation: {}; COUNT 50 ≤ 10 round trips for its launches: {}.\n\n",
        verdict(p3["round_trips_max"].as_u64().unwrap_or(u64::MAX) <= 6),
        verdict(p50["round_trips_of_launches"].as_u64().unwrap_or(u64::MAX) <= 10)
    ));

    md.push_str("## Size (each function built on its own, with only its own feature)\n\n| function | stripped x86_64 binary bytes | zip bytes | zip arch | zip ≤ 2 MB |\n|---|---|---|---|---|\n");
    for function in FUNCTIONS {
        let s = &r["size"][function.as_str()];
        let zip = s["zip_bytes"].as_u64();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            function.as_str(),
            s["binary_bytes"],
            zip.map(|z| z.to_string())
                .unwrap_or_else(|| "not built".into()),
            s["zip_arch"].as_str().unwrap_or("-"),
            zip.map(|z| verdict(z <= 2_000_000)).unwrap_or("-")
        ));
    }
    md.push_str(&format!(
        "\n## Build\n\nNo-op `cargo build --workspace`: {:.2} s. Release builds, x86_64 (the four functions and the hello-world, one at a time): {}. arm64 zips (cargo lambda, one function at a time): {}.\n",
        num(&r["build"]["noop_debug_build_s"]),
        r["build_release_log"].as_str().unwrap_or("not recorded"),
        r["build_zip_log"].as_str().unwrap_or("not recorded"),
    ));
    md
}
