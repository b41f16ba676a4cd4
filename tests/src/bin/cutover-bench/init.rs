//! Init: spawn to the first `/runtime/invocation/next`, beside the hello-world and Python.

use super::*;

pub(crate) fn base_env(
    local: Option<&Local>,
    settings: &[(&str, String)],
) -> Vec<(String, String)> {
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
pub(crate) async fn init_durations(settings: &[(&str, String)]) -> Value {
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
pub(crate) async fn init_and_first_invocation(local: &Local, settings: &[(&str, String)]) -> Value {
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

pub(crate) fn python_baseline() -> Value {
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

/// Init of two builds of one function (say opt-level "s" and "z"), spawns interleaved, and
/// their sizes: printed, not written to the results (a one-off comparison outside `make bench`).
pub(crate) async fn compare_init(a: &str, b: &str) {
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
