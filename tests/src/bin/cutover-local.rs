//! `cutover-local demo [--yes] [--fleet asg]`: a whole release against a local AWS (moto),
//! driving the built function binaries through `cargo lambda watch` / `cargo lambda invoke` the
//! way CodePipeline would, and printing a timeline. With `--fleet asg` every release is an Auto
//! Scaling group of its own, from a copy of the team's launch template.
//!
//! `cutover-local serve`: the same local AWS and functions, left running for `make invoke-%`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cutover::aws::{Aws, InstanceQuery};
use cutover::world::{describe_forward, short_arn, InstanceState};
use cutover::Function;
use cutover_tests::lambda::LambdaEmulator;
use cutover_tests::{
    fixture, job_event, moto::repo_root, play_action, AckKind, Endpoint, ServiceFixture,
};
use serde_json::{json, Value};

const SERVICE: &str = "mobile-zum-api";
const VARIABLE: &str = "MOBILE_ZUM_API";
/// The release in the sample events.
const RELEASE: &str = "a1b2c3d4-5678-90ab-cdef-111122223333";
/// The release already serving when the demo starts.
const FIRST_RELEASE: &str = "f00dcafe-0000-4000-8000-000000000001";
/// The alarm in `events/switch-listener-alarm.json`, in the service's `ALARMS`.
const ALARM: &str = "cutover-mobile-zum-api-5xx";
/// How long the demo keeps a replaced fleet for rollback (wall-clock seconds): long enough for
/// the demo's rollbacks and re-releases, which all happen inside it.
const BAKE_S: u64 = 30;
/// switch-listener's timeout as the demo's functions are told it: they run one at a time and
/// answer in well under it, so cleanup's wait past the bake (twice this) stays short.
const SWITCH_LISTENER_TIMEOUT_S: &str = "2";

struct Demo {
    endpoint: Endpoint,
    clients: fixture::Clients,
    emulator: LambdaEmulator,
    aws: Aws,
    base: fixture::Base,
    service: ServiceFixture,
    work: PathBuf,
    jobs: u32,
    published_seen: usize,
    /// `--fleet asg`: the service's fleets are groups.
    in_groups: bool,
}

/// The team's launch template in the `asg` demo, only ever read.
const TEAM_TEMPLATE: &str = "mobile-zum-api-web";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("demo");
    let result = match command {
        "demo" => {
            let in_groups = args.windows(2).any(|w| w[0] == "--fleet" && w[1] == "asg");
            demo(args.iter().any(|a| a == "--yes"), in_groups).await
        }
        "serve" => serve().await,
        other => Err(format!(
            "unknown command `{other}`: use `demo [--yes] [--fleet asg]` or `serve`"
        )),
    };
    if let Err(message) = result {
        eprintln!("\nFAILED: {message}");
        std::process::exit(1);
    }
}

struct Started {
    _moto: cutover_tests::Moto,
    demo: Demo,
}

async fn start(in_groups: bool) -> Result<Started, String> {
    let moto = cutover_tests::Moto::start();
    // The demo's functions run on the wall clock; the endpoint's AWS-like behaviours stay off.
    let wall_clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    ));
    let endpoint = Endpoint::start(&moto.url, wall_clock).await;
    let config = fixture::sdk_config(&endpoint.url).await;
    let clients = fixture::Clients::new(&config);
    let base = fixture::seed_base(&clients, 2).await;
    let service = fixture::seed_service(&clients, &base, SERVICE, 10).await;
    fixture::put_alarm(&clients, ALARM, "OK").await;
    let settings = if in_groups {
        team_template(&clients, &base).await?;
        fixture::settings_json(
            &base,
            2,
            0,
            json!({"BAKE_S": BAKE_S, "ALARMS": [ALARM], "FLEET": "asg",
                   "LAUNCH_TEMPLATE": TEAM_TEMPLATE, "INSTANCE_TYPE": null, "SG": null}),
        )
    } else {
        fixture::settings_json(&base, 2, 2, json!({"BAKE_S": BAKE_S, "ALARMS": [ALARM]}))
    };
    let work = repo_root().join("target/cutover-local");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", endpoint.url.as_str()),
        ("AWS_REGION", fixture::REGION),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("RUST_LOG", "info"),
        ("CUTOVER_SNS_TOPIC_ARN", base.topic_arn.as_str()),
        (
            "CUTOVER_SWITCH_LISTENER_TIMEOUT_S",
            SWITCH_LISTENER_TIMEOUT_S,
        ),
        (VARIABLE, settings.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let emulator = LambdaEmulator::start(&env, &work.join("logs"))?;
    let demo = Demo {
        endpoint,
        clients,
        emulator,
        aws: Aws::new(&config),
        base,
        service,
        work,
        jobs: 0,
        published_seen: 0,
        in_groups,
    };
    Ok(Started { _moto: moto, demo })
}

async fn serve() -> Result<(), String> {
    let started = start(false).await?;
    let demo = &started.demo;
    std::fs::write(
        demo.work.join("lambda-port"),
        demo.emulator.port.to_string(),
    )
    .map_err(|e| e.to_string())?;
    println!("local AWS endpoint: {}", demo.endpoint.url);
    println!(
        "functions served by cargo lambda watch on 127.0.0.1:{}",
        demo.emulator.port
    );
    println!(
        "service {SERVICE} is seeded; its settings are {VARIABLE}. Logs: {}",
        demo.work.join("logs").display()
    );
    println!("try: make invoke-provision EVENT=events/provision.json   (Ctrl-C stops everything)");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The team's launch template, as their stack would create it.
async fn team_template(clients: &fixture::Clients, base: &fixture::Base) -> Result<(), String> {
    use aws_sdk_ec2::types as ec2t;
    clients
        .ec2
        .create_launch_template()
        .launch_template_name(TEAM_TEMPLATE)
        .launch_template_data(
            ec2t::RequestLaunchTemplateData::builder()
                .image_id(&base.ami)
                .instance_type(ec2t::InstanceType::T3Small)
                .security_group_ids(&base.security_group)
                .build(),
        )
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("the team's launch template: {e:?}"))
}

async fn demo(assume_yes: bool, in_groups: bool) -> Result<(), String> {
    let clock = Instant::now();
    let fleets = if in_groups {
        "each release an Auto Scaling group of its own"
    } else {
        "fleets of instances"
    };
    println!(
        "cutover demo: a blue/green release of `{SERVICE}` against a local AWS (moto), {fleets}\n"
    );
    let Started { _moto, mut demo } = start(in_groups).await?;
    println!(
        "seeded: VPC, 2 subnets, ALB with `product` ({}) and `pre-product` ({}) rules, blue/green target groups, private zone {}, 2 EIPs, SNS topic",
        demo.service.product_host,
        demo.service.qa_host,
        fixture::ZONE_NAME
    );
    demo.snapshot().await?;

    println!(
        "\n== release {} is already serving (first deploy of the service) ==",
        &FIRST_RELEASE[..8]
    );
    for function in [
        Function::Provision,
        Function::RegisterTarget,
        Function::SwitchListener,
    ] {
        demo.stage(function, FIRST_RELEASE, None, "release").await?;
    }
    demo.snapshot().await?;

    println!("\n== pipeline execution {} ==", &RELEASE[..8]);
    demo.stage(
        Function::Provision,
        RELEASE,
        Some("provision.json"),
        "release",
    )
    .await?;
    demo.stage(
        Function::RegisterTarget,
        RELEASE,
        Some("register-target.json"),
        "release",
    )
    .await?;
    demo.snapshot().await?;

    approve(assume_yes)?;
    demo.stage(
        Function::SwitchListener,
        RELEASE,
        Some("switch-listener.json"),
        "release",
    )
    .await?;
    demo.snapshot().await?;

    println!("\n== trouble in production: the on-call engineer sends the rollback command ==");
    let rollback = json!({"service": SERVICE, "action": "rollback"});
    demo.direct(Function::SwitchListener, &rollback, "rollback by hand")
        .await?;
    demo.snapshot().await?;
    println!("\n== the same command again (a retry, a second person): nothing moves ==");
    demo.direct(
        Function::SwitchListener,
        &rollback,
        "rollback by hand, again",
    )
    .await?;

    println!("\n== fixed: release again, as a canary; trouble at 10%: roll back by hand ==");
    let canary = json!({"service": SERVICE, "release": RELEASE, "strategy": "canary:10:5"});
    let token = demo
        .one_invocation(Function::SwitchListener, &canary, None)
        .await?;
    demo.snapshot().await?;
    demo.direct(
        Function::SwitchListener,
        &rollback,
        "rollback by hand, mid-canary",
    )
    .await?;
    demo.snapshot().await?;
    println!("   CodePipeline sends the canary's continuation: the shift stops, never resumes");
    demo.one_invocation(Function::SwitchListener, &canary, token.as_deref())
        .await?;

    println!("\n== fixed again: release ==");
    demo.stage(
        Function::SwitchListener,
        RELEASE,
        Some("switch-listener.json"),
        "release",
    )
    .await?;
    demo.snapshot().await?;

    println!("\n== {ALARM} goes to ALARM inside the bake: switch-listener rolls back by itself ==");
    fixture::set_alarm(&demo.clients, ALARM, "ALARM").await;
    demo.event(Function::SwitchListener, "switch-listener-alarm.json")
        .await?;
    demo.snapshot().await?;

    println!(
        "\n== the alarm clears: release again, then clean up once the bake ({BAKE_S}s) is over =="
    );
    fixture::set_alarm(&demo.clients, ALARM, "OK").await;
    demo.stage(
        Function::SwitchListener,
        RELEASE,
        Some("switch-listener.json"),
        "release",
    )
    .await?;
    demo.clean_up_after_the_bake().await?;
    demo.snapshot().await?;

    demo.verify_final_state().await?;
    println!("\ndemo finished in {:.1}s: product serves release {} on the blue slot; nothing left behind.", clock.elapsed().as_secs_f64(), &RELEASE[..8]);
    Ok(())
}

fn approve(assume_yes: bool) -> Result<(), String> {
    let interactive = std::io::stdin().is_terminal() && std::env::var_os("CI").is_none();
    if assume_yes || !interactive {
        println!("\n-- manual approval: approved automatically (--yes or non-interactive) --");
        return Ok(());
    }
    print!(
        "\n-- manual approval: QA is on the pre-product route. Release {} to production? [y/N] ",
        &RELEASE[..8]
    );
    std::io::stdout().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.trim().eq_ignore_ascii_case("y") {
        Ok(())
    } else {
        Err("approval rejected: the release stays in QA".into())
    }
}

impl Demo {
    /// One pipeline action: invoke the function with the sample event (or one built from it),
    /// then again with each continuation token, as CodePipeline does.
    async fn stage(
        &mut self,
        function: Function,
        release: &str,
        sample: Option<&str>,
        action: &str,
    ) -> Result<(), String> {
        let started = Instant::now();
        let params = json!({"service": SERVICE, "release": release, "action": action});
        let (work, emulator, endpoint) = (&self.work, &self.emulator, &self.endpoint);
        let jobs = &mut self.jobs;
        let next_job_id = || {
            *jobs += 1;
            format!("demo-job-{:03}", *jobs)
        };
        let run = play_action(endpoint, next_job_id, 10, |job_id, token| {
            let mut event = match sample {
                Some(file) => cutover_tests::sample_event(file),
                None => job_event(function, &job_id, &params, None),
            };
            let job = &mut event["CodePipeline.job"];
            job["id"] = Value::from(job_id.clone());
            match token {
                Some(token) => job["data"]["continuationToken"] = Value::from(token),
                None => {
                    if let Some(data) = job["data"].as_object_mut() {
                        data.remove("continuationToken");
                    }
                }
            }
            let file = work.join(format!("events/{job_id}.json"));
            let invoked = write_json(&file, &event).and_then(|()| {
                tokio::task::block_in_place(|| emulator.invoke(function, &file).map(drop))
                    .map_err(|e| format!("cargo lambda invoke {}: {e}", function.as_str()))
            });
            async move { invoked.map(|()| Value::Null) }
        })
        .await;
        if let Some(error) = run.error {
            return Err(error);
        }
        let invocations = run.acks.len();
        let Some((ack, waits)) = run.acks.split_last() else {
            return Err(format!("{} was never acknowledged", function.as_str()));
        };
        for wait in waits {
            println!(
                "   … {} continues: {}",
                function.as_str(),
                wait.summary.clone().unwrap_or_default()
            );
        }
        if ack.continuation_token.is_some() {
            return Err(format!(
                "{} did not finish in {invocations} invocations",
                function.as_str()
            ));
        }
        let ack = ack.clone();
        let took = started.elapsed().as_millis();
        let verdict = if ack.kind == AckKind::Success {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "\n[{verdict}] {:<15} {}  ({invocations} invocation(s), {took} ms)",
            function.as_str(),
            ack.summary
                .clone()
                .or(ack.message.clone())
                .unwrap_or_default()
        );
        if !ack.output_variables.is_empty() {
            let mut outputs: Vec<_> = ack.output_variables.iter().collect();
            outputs.sort();
            for (key, value) in outputs {
                println!("      output {key} = {value}");
            }
        }
        self.print_notifications();
        if ack.kind != AckKind::Success {
            return Err(format!(
                "{} failed: {}",
                function.as_str(),
                ack.message.unwrap_or_default()
            ));
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<(), String> {
        let instances = self
            .aws
            .instances(InstanceQuery::Service(SERVICE))
            .await
            .map_err(|e| e.to_string())?;
        let alb = self.aws.alb(SERVICE).await.map_err(|e| e.to_string())?;
        let dns = self
            .aws
            .dns(&self.base.zone_id, SERVICE)
            .await
            .map_err(|e| e.to_string())?;
        let slot_of = |arn: Option<&str>| {
            arn.and_then(|a| alb.slot_of_arn(a))
                .map(|s| s.as_str())
                .unwrap_or("?")
        };
        println!(
            "   ALB: product -> {} ({}), pre-product -> {} ({})",
            slot_of(alb.product.forward.sole_target()),
            describe_forward(&alb.product.forward),
            slot_of(alb.pre_product.forward.sole_target()),
            describe_forward(&alb.pre_product.forward),
        );
        if let Some(mark) = &alb.product.rolled_back {
            println!("   product route: {mark}");
        }
        for tg in [&alb.blue, &alb.green] {
            let targets: Vec<String> = tg
                .targets
                .iter()
                .map(|t| format!("{} {}", t.id, t.health.as_str()))
                .collect();
            println!(
                "   {:<5} {}: [{}]",
                tg.slot.as_str(),
                tg.name,
                targets.join(", ")
            );
        }
        if self.in_groups {
            let groups = self
                .aws
                .groups(SERVICE, false)
                .await
                .map_err(|e| e.to_string())?;
            for g in &groups {
                let attached: Vec<String> = g.target_groups.iter().map(|t| short_arn(t)).collect();
                println!(
                    "   group {} stage={:<11} desired={} in-service={} attached=[{}]{}",
                    g.name,
                    g.stage.map(|s| s.as_str()).unwrap_or("-"),
                    g.desired,
                    g.in_service(),
                    attached.join(", "),
                    if g.is_held() { " held" } else { "" }
                );
            }
        }
        if instances.is_empty() {
            println!("   instances: none");
        }
        for i in &instances {
            println!(
                "   instance {} {:<40} stage={:<11} state={}",
                i.id,
                i.name.clone().unwrap_or_default(),
                i.stage.map(|s| s.as_str()).unwrap_or("-"),
                i.state.as_str()
            );
        }
        for (name, record) in &dns.records {
            println!(
                "   dns {} -> {}",
                name.trim_end_matches('.'),
                record.values.join(", ")
            );
        }
        Ok(())
    }

    fn print_notifications(&mut self) {
        let published = self.endpoint.published();
        for (subject, _) in &published[self.published_seen..] {
            println!("      SNS: {subject}");
        }
        self.published_seen = published.len();
    }

    /// One invocation of a pipeline job (no continuation played): its acknowledgement printed,
    /// its continuation token returned.
    async fn one_invocation(
        &mut self,
        function: Function,
        params: &Value,
        token: Option<&str>,
    ) -> Result<Option<String>, String> {
        self.jobs += 1;
        let job_id = format!("demo-job-{:03}", self.jobs);
        let file = self.work.join(format!("events/{job_id}.json"));
        write_json(&file, &job_event(function, &job_id, params, token))?;
        let emulator = &self.emulator;
        tokio::task::block_in_place(|| emulator.invoke(function, &file))
            .map_err(|e| format!("cargo lambda invoke {}: {e}", function.as_str()))?;
        let ack = self
            .endpoint
            .ack_for(&job_id)
            .ok_or_else(|| format!("job {job_id} was not acknowledged"))?;
        let verdict = match (&ack.kind, &ack.continuation_token) {
            (AckKind::Success, Some(_)) => "continues",
            (AckKind::Success, None) => "ok",
            _ => "job failed",
        };
        println!(
            "\n[{verdict}] {:<15} {}",
            function.as_str(),
            ack.summary
                .clone()
                .or(ack.message.clone())
                .unwrap_or_default()
        );
        self.print_notifications();
        Ok(ack.continuation_token)
    }

    /// A direct invocation (what `aws lambda invoke` sends), through `cargo lambda invoke`.
    async fn direct(
        &mut self,
        function: Function,
        event: &Value,
        what: &str,
    ) -> Result<(), String> {
        let started = Instant::now();
        self.jobs += 1;
        let file = self
            .work
            .join(format!("events/direct-{:03}.json", self.jobs));
        write_json(&file, event)?;
        let emulator = &self.emulator;
        let response = tokio::task::block_in_place(|| emulator.invoke(function, &file))
            .map_err(|e| format!("cargo lambda invoke {}: {e}", function.as_str()))?;
        let response: Value = serde_json::from_str(&response).unwrap_or(Value::Null);
        let result = &response["result"];
        let verdict = if result["outcome"] == "succeeded" {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "\n[{verdict}] {what}: {}  ({} ms)",
            result["summary"]
                .as_str()
                .or(result["message"].as_str())
                .unwrap_or_default(),
            started.elapsed().as_millis()
        );
        self.print_notifications();
        if verdict == "ok" {
            Ok(())
        } else {
            Err(format!("{what} failed: {result}"))
        }
    }

    /// An EventBridge event from `events/`, through `cargo lambda invoke`.
    async fn event(&mut self, function: Function, sample: &str) -> Result<(), String> {
        let started = Instant::now();
        let file = self.work.join(format!("events/{sample}"));
        let mut event = cutover_tests::sample_event(sample);
        if event.get("time").is_some() {
            // Sent now, as EventBridge would: an alarm event counts by its own time.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            event["time"] = cutover_tests::alarm_event(now)["time"].clone();
        }
        write_json(&file, &event)?;
        let emulator = &self.emulator;
        let response = tokio::task::block_in_place(|| emulator.invoke(function, &file))
            .map_err(|e| format!("cargo lambda invoke {}: {e}", function.as_str()))?;
        let response: Value = serde_json::from_str(&response).unwrap_or(Value::Null);
        let result = &response["services"][SERVICE];
        let verdict = if result["outcome"] == "succeeded" {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "\n[{verdict}] {:<15} {}  ({} ms)",
            function.as_str(),
            result["summary"]
                .as_str()
                .or(result["message"].as_str())
                .unwrap_or("no service names this alarm"),
            started.elapsed().as_millis()
        );
        self.print_notifications();
        if verdict == "ok" {
            Ok(())
        } else {
            Err(format!("{} failed: {result}", function.as_str()))
        }
    }

    /// Cleanup once the bake of the replaced fleet is over (retried briefly: the bake is
    /// measured from the switch, on the wall clock).
    async fn clean_up_after_the_bake(&mut self) -> Result<(), String> {
        let takeover: u64 = 2 * SWITCH_LISTENER_TIMEOUT_S.parse::<u64>().unwrap_or(0);
        println!(
            "   … waiting {BAKE_S}s + {takeover}s: the replaced fleet is kept for rollback, then until no rollback can still be landing"
        );
        tokio::time::sleep(std::time::Duration::from_secs(BAKE_S + takeover)).await;
        for _ in 0..10 {
            self.stage(Function::Cleanup, RELEASE, Some("cleanup.json"), "release")
                .await?;
            let instances = self
                .aws
                .instances(InstanceQuery::Service(SERVICE))
                .await
                .map_err(|e| e.to_string())?;
            if instances
                .iter()
                .all(|i| i.release.as_deref() == Some(RELEASE))
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        Err(format!(
            "the first release was still alive {}s after its bake",
            BAKE_S + 10
        ))
    }

    async fn verify_final_state(&self) -> Result<(), String> {
        let instances = self
            .aws
            .instances(InstanceQuery::Service(SERVICE))
            .await
            .map_err(|e| e.to_string())?;
        let alb = self.aws.alb(SERVICE).await.map_err(|e| e.to_string())?;
        let serving: Vec<&str> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| i.id.as_str())
            .collect();
        let mut problems = Vec::new();
        if alb.product.forward.sole_target() != Some(self.service.blue.as_str()) {
            problems.push("product does not forward to the blue slot".to_owned());
        }
        if instances
            .iter()
            .any(|i| i.release.as_deref() != Some(RELEASE))
        {
            problems.push("instances of the first release are still alive".to_owned());
        }
        if serving.len() != 2 || !serving.iter().all(|id| alb.blue.has(id)) {
            problems.push(format!(
                "expected the 2 instances of {RELEASE} in blue, found {serving:?}"
            ));
        }
        if !alb.blue.unhealthy().is_empty() {
            problems.push("product has unhealthy targets".to_owned());
        }
        let acks = self.endpoint.acks();
        // One failure is the story: the canary's continuation after the rollback by hand.
        let failed: Vec<_> = acks.iter().filter(|a| a.kind == AckKind::Failure).collect();
        let stopped_canary = |a: &&cutover_tests::Ack| {
            a.message
                .as_deref()
                .is_some_and(|m| m.contains("the switch stops and never resumes"))
        };
        if failed.len() != 1 || !failed.iter().all(stopped_canary) {
            problems.push(format!(
                "expected one failed job, the stopped canary: {failed:?}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("final state is wrong: {}", problems.join("; ")))
        }
    }
}

fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap())
        .map_err(|e| format!("{}: {e}", path.display()))
}
