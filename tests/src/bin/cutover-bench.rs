//! `make bench`: measures the release binaries side by side, in one run on one machine, and
//! writes `bench/RESULTS.md` and `bench/results.json`. Targets are reported next to the figures;
//! a miss is reported, not hidden. Nothing here asserts a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover::Function;
use cutover_tests::endpoint::{is_mutating_elb, is_mutation};
use cutover_tests::lambda::FUNCTIONS;
use cutover_tests::moto::repo_root;
use cutover_tests::runtime_api::RuntimeApi;
use cutover_tests::{fixture, job_event, sample_event, Local};
use serde_json::{json, Value};

const SERVICE: &str = "mobile-zum-api";
const SPAWNS: usize = 30;
const INVOCATIONS: usize = 20;

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
        let api = RuntimeApi::start().await;
        let started = Instant::now();
        let child = Command::new(release_dir().join(function.as_str()))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function.as_str())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `cargo build --release` first)",
                    function.as_str()
                )
            });
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

async fn init_durations(settings: &[(&str, String)]) -> Value {
    let mut out = BTreeMap::new();
    for function in FUNCTIONS {
        let mut stats = Stats::default();
        for _ in 0..SPAWNS {
            let (running, started) = Running::spawn(function, &base_env(None, settings)).await;
            stats.0.push(ms(running.wait_ready(started).await));
        }
        out.insert(function.as_str(), stats.json());
    }
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

/// Runs one CodePipeline action through a running binary, continuations included.
async fn action(
    local: &Local,
    running: &Running,
    function: Function,
    params: &Value,
) -> (Duration, usize) {
    let started = Instant::now();
    let mut token: Option<String> = None;
    let mut invocations = 0;
    loop {
        invocations += 1;
        let job_id = local.next_job_id();
        let (ok, body) = running
            .api
            .invoke(&job_event(function, &job_id, params, token.as_deref()))
            .await;
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
        if token.is_none() || invocations > 10 {
            return (started.elapsed(), invocations);
        }
    }
}

fn call_counts(local: &Local, mark: usize) -> Value {
    let calls = &local.endpoint.calls()[mark..];
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

async fn release_path() -> Value {
    let (local, service, settings) = world(2, 2).await;
    let env = base_env(Some(&local), &settings);
    let mut runners = BTreeMap::new();
    for function in FUNCTIONS {
        let (running, started) = Running::spawn(function, &env).await;
        running.wait_ready(started).await;
        runners.insert(function.as_str(), running);
    }
    let params = |release: &str, action: &str| json!({"service": SERVICE, "release": release, "action": action});
    let steps = [
        (
            "first release: provision",
            Function::Provision,
            "r0",
            "release",
        ),
        (
            "first release: register-target",
            Function::RegisterTarget,
            "r0",
            "release",
        ),
        (
            "first release: switch-listener",
            Function::SwitchListener,
            "r0",
            "release",
        ),
        ("provision", Function::Provision, "r1", "release"),
        ("register-target", Function::RegisterTarget, "r1", "release"),
        (
            "switch-listener release",
            Function::SwitchListener,
            "r1",
            "release",
        ),
        (
            "switch-listener rollback",
            Function::SwitchListener,
            "r1",
            "rollback",
        ),
        (
            "switch-listener re-release",
            Function::SwitchListener,
            "r1",
            "release",
        ),
    ];
    let mut release: Vec<(&str, Value)> = Vec::new();
    for (label, function, id, verb) in steps {
        let mark = local.endpoint.mark();
        let (took, invocations) = action(
            &local,
            &runners[function.as_str()],
            function,
            &params(id, verb),
        )
        .await;
        let mut counts = call_counts(&local, mark);
        counts["latency_ms"] = json!(ms(took));
        counts["invocations"] = json!(invocations);
        if function == Function::SwitchListener {
            let moves = local.endpoint.rule_moves(mark, &service.product_rule).len();
            counts["product_route_mutations"] = json!(moves);
        }
        release.push((label, counts));
    }

    // From the start of a switch to the product ModifyRule's answer.
    let mut to_modify = Stats::default();
    let runner = &runners["switch-listener"];
    for n in 0..10 {
        let verb = if n % 2 == 0 { "rollback" } else { "release" };
        let mark = local.endpoint.mark();
        let started = Instant::now();
        action(
            &local,
            runner,
            Function::SwitchListener,
            &params("r1", verb),
        )
        .await;
        let answered = local
            .endpoint
            .rule_moves(mark, &service.product_rule)
            .first()
            .map(|c| c.answered)
            .expect("the switch moved product");
        to_modify.0.push(ms(answered - started));
    }
    // The old fleet goes only now: the timing loop above needs it for its rollbacks.
    let mark = local.endpoint.mark();
    let (took, invocations) = action(
        &local,
        &runners["cleanup"],
        Function::Cleanup,
        &params("r1", "release"),
    )
    .await;
    let mut counts = call_counts(&local, mark);
    counts["latency_ms"] = json!(ms(took));
    counts["invocations"] = json!(invocations);
    release.push(("cleanup", counts));

    // Repeated invocations of each function on the finished world (replays: read, plan, ack).
    let mut latency = BTreeMap::new();
    let mut rss = BTreeMap::new();
    for function in FUNCTIONS {
        let running = &runners[function.as_str()];
        let mut stats = Stats::default();
        for _ in 0..INVOCATIONS {
            let (took, _) = action(&local, running, function, &params("r1", "release")).await;
            stats.0.push(ms(took));
        }
        latency.insert(function.as_str(), stats.json());
        rss.insert(function.as_str(), running.peak_rss_mib());
    }

    let release: Vec<Value> = release
        .into_iter()
        .map(|(label, mut counts)| {
            counts["step"] = json!(label);
            counts
        })
        .collect();
    json!({"release": release, "replay_latency": latency, "peak_rss_mib": rss, "switch_to_modify_rule": to_modify.json()})
}

async fn scale() -> Value {
    let mut out = BTreeMap::new();
    for count in [1u32, 10, 50] {
        let (local, _service, settings) = world(count, 0).await;
        let env = base_env(Some(&local), &settings);
        let (provision, started) = Running::spawn(Function::Provision, &env).await;
        provision.wait_ready(started).await;
        let mark = local.endpoint.mark();
        let (took, invocations) = action(
            &local,
            &provision,
            Function::Provision,
            &json!({"service": SERVICE, "release": "s1"}),
        )
        .await;
        let mut counts = call_counts(&local, mark);
        counts["latency_ms"] = json!(ms(took));
        counts["invocations"] = json!(invocations);
        out.insert(format!("provision {count}"), counts);
        if count == 50 {
            let (cleanup, started) = Running::spawn(Function::Cleanup, &env).await;
            cleanup.wait_ready(started).await;
            let mut event = sample_event("cleanup-pipeline-failed.json");
            event["detail"]["execution-id"] = json!("s1");
            let mark = local.endpoint.mark();
            let started = Instant::now();
            let (ok, body) = cleanup.api.invoke(&event).await;
            assert!(ok, "{}", String::from_utf8_lossy(&body));
            let mut counts = call_counts(&local, mark);
            counts["latency_ms"] = json!(ms(started.elapsed()));
            out.insert("cleanup 50".into(), counts);
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
    let settings_for_init = {
        let (local, _service, settings) = world(2, 2).await;
        drop(local);
        settings
    };
    eprintln!("bench: init durations ({SPAWNS} spawns per function)…");
    let init = init_durations(&settings_for_init).await;
    eprintln!("bench: python baseline…");
    let python = python_baseline();
    eprintln!("bench: a release through the binaries…");
    let release = release_path().await;
    eprintln!("bench: scale…");
    let scale = scale().await;
    let results = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "init": init,
        "python_baseline_init": python,
        "release": release,
        "scale": scale,
        "size": sizes(),
        "build": noop_build(),
        "build_release_log": std::fs::read_to_string(repo_root().join("bench/out/release-build-time.txt")).ok(),
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn markdown(r: &Value) -> String {
    let mut md = String::from("# cutover benchmark\n\nWritten by `make bench` (`tests/src/bin/cutover-bench.rs`); every figure below comes from one run on one machine.\n\n");
    let python_median = r["python_baseline_init"]["median_ms"]
        .as_f64()
        .unwrap_or(f64::NAN);
    md.push_str("## Init duration (spawn → first `/runtime/invocation/next`), release x86_64\n\n| function | min ms | median ms | p95 ms | target median ≤ 15 ms | ≤ 1/25 of Python |\n|---|---|---|---|---|---|\n");
    for function in FUNCTIONS {
        let s = &r["init"][function.as_str()];
        let median = s["median_ms"].as_f64().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} (1/{:.0}) |\n",
            function.as_str(),
            s["min_ms"],
            s["median_ms"],
            s["p95_ms"],
            verdict(median <= 15.0),
            verdict(median * 25.0 <= python_median),
            python_median / median
        ));
    }
    let p = &r["python_baseline_init"];
    md.push_str(&format!(
        "| Python baseline (boto3 + the same 5 clients) | {} | {} | {} | | |\n\n",
        p["min_ms"], p["median_ms"], p["p95_ms"]
    ));

    md.push_str("## A release through the binaries (local endpoint: moto behind the recording proxy)\n\n| step | latency ms | invocations | calls | reads | mutations | ELB mutations | product-route mutations |\n|---|---|---|---|---|---|---|---|\n");
    if let Some(steps) = r["release"]["release"].as_array() {
        for c in steps {
            let label = c["step"].as_str().unwrap_or_default();
            md.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} |\n",
                c["latency_ms"],
                c["invocations"],
                c["total"],
                c["reads"],
                c["mutations"],
                c["elb_mutations"],
                c.get("product_route_mutations")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into())
            ));
        }
    }
    let steps = r["release"]["release"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let moves = ["switch-listener release", "switch-listener rollback"]
        .iter()
        .all(|k| {
            steps
                .iter()
                .any(|c| c["step"] == json!(k) && c["product_route_mutations"] == json!(1))
        });
    md.push_str(&format!(
        "\nSwitch and rollback move product with one mutating call each: {}.\n\n",
        verdict(moves)
    ));
    md.push_str("## Invocation latency (replays on the finished world) and memory\n\n| function | median ms | p95 ms | peak RSS MiB | target RSS ≤ 30 MiB |\n|---|---|---|---|---|\n");
    for function in FUNCTIONS {
        let s = &r["release"]["replay_latency"][function.as_str()];
        let rss = r["release"]["peak_rss_mib"][function.as_str()]
            .as_f64()
            .unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {} | {} | {rss} | {} |\n",
            function.as_str(),
            s["median_ms"],
            s["p95_ms"],
            verdict(rss <= 30.0)
        ));
    }
    let t = &r["release"]["switch_to_modify_rule"];
    md.push_str(&format!(
        "\nFrom the start of a switch-listener invocation to the product `ModifyRule` answer: median {} ms, p95 {} ms (n = {}).\n\n",
        t["median_ms"], t["p95_ms"], t["n"]
    ));
    md.push_str("## Scale\n\n| run | latency ms | calls | reads | mutations | RunInstances |\n|---|---|---|---|---|---|\n");
    if let Some(runs) = r["scale"].as_object() {
        for (label, c) in runs {
            md.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} |\n",
                c["latency_ms"],
                c["total"],
                c["reads"],
                c["mutations"],
                c["by_action"]["RunInstances"].as_u64().unwrap_or(0)
            ));
        }
    }
    if let Some(runs) = r["scale"].as_object() {
        let per_instance: Vec<String> = runs
            .iter()
            .filter_map(|(label, c)| {
                let count: f64 = label.strip_prefix("provision ")?.parse().ok()?;
                let launches = c["by_action"]["RunInstances"].as_f64()?;
                Some(format!("{label}: {:.2}", launches / count))
            })
            .collect();
        md.push_str(&format!(
            "\n`RunInstances` calls per instance launched: {}.\n\n",
            per_instance.join(", ")
        ));
    }
    md.push_str("## Size\n\n| function | stripped binary bytes | zip bytes | zip arch | target zip ≤ 3 MB |\n|---|---|---|---|---|\n");
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
            zip.map(|z| verdict(z <= 3_000_000)).unwrap_or("-")
        ));
    }
    let sizes: std::collections::BTreeSet<u64> = FUNCTIONS
        .iter()
        .filter_map(|f| r["size"][f.as_str()]["binary_bytes"].as_u64())
        .collect();
    md.push_str(&format!(
        "\nDistinct stripped binary sizes among the four functions: {}.\n",
        sizes.len()
    ));
    md.push_str(&format!(
        "\n## Build\n\nNo-op `cargo build --workspace`: {:.2} s. Release build of the four functions: {}.\n",
        r["build"]["noop_debug_build_s"].as_f64().unwrap_or(f64::NAN),
        r["build_release_log"].as_str().map(str::trim).unwrap_or("not recorded")
    ));
    md
}
