//! `bench/RESULTS.md`, a section per thing measured.

use super::*;

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub(crate) fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

pub(crate) fn markdown(r: &Value) -> String {
    let latency = r["latency_ms"].as_u64().unwrap_or(0);
    let title = "# cutover benchmark\n\nWritten by `make bench` (`tests/src/bin/cutover-bench/`); every figure below comes from one run on one machine.\n\n";
    [
        title.to_owned(),
        init_section(r),
        release_section(r, latency),
        replays_section(r),
        scale_section(r, latency),
        size_section(r),
        build_section(r),
    ]
    .concat()
}

fn init_section(r: &Value) -> String {
    let mut md = String::new();
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
    md
}

fn release_section(r: &Value, latency: u64) -> String {
    let mut md = String::new();
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
    md.push_str(&targets_section(r, &steps, latency));
    md
}

fn targets_section(r: &Value, steps: &[Value], latency: u64) -> String {
    let mut md = String::new();
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
    let cold_named = [
        "switch-listener release after that rollback, cold, LISTENER in the settings",
        "switch-listener rollback, cold, LISTENER in the settings",
    ];
    let warm = [
        "switch-listener release, warm",
        "switch-listener rollback, warm",
    ];
    let alarm = "switch-listener rollback by an alarm's event, cold";
    md.push_str("\nTargets (switch-listener):\n\n");
    md.push_str(&format!(
        "- ≤ 4 round trips before product moves from a cold start (release, rollback): {} ({}, {}); with `LISTENER` in the settings: {} ({}, {})\n",
        verdict(cold.iter().all(|l| before(l) <= 4)),
        before(cold[0]),
        before(cold[1]),
        verdict(cold_named.iter().all(|l| before(l) <= 4)),
        before(cold_named[0]),
        before(cold_named[1])
    ));
    md.push_str(&format!(
        "- ≤ 2 in a warm container: {} ({}, {})\n",
        verdict(warm.iter().all(|l| before(l) <= 2)),
        before(warm[0]),
        before(warm[1])
    ));
    md.push_str(&format!(
        "- ≤ 5 for a rollback by an alarm's event, cold: {} ({})\n",
        verdict(before(alarm) <= 5),
        before(alarm)
    ));
    let walls: Vec<f64> = cold
        .iter()
        .chain(&cold_named)
        .chain(&warm)
        .map(|l| wall(l))
        .collect();
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
                .chain(&cold_named)
                .chain(&warm)
                .chain([&alarm])
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
    md
}

fn replays_section(r: &Value) -> String {
    let mut md = String::new();
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
    md
}

fn scale_section(r: &Value, latency: u64) -> String {
    let mut md = String::new();
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
    md
}

fn size_section(r: &Value) -> String {
    let mut md = String::new();
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
    md
}

fn build_section(r: &Value) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "\n## Build\n\nNo-op `cargo build --workspace`: {:.2} s. Release builds, x86_64 (the four functions and the hello-world, one at a time): {}. arm64 zips (cargo lambda, one function at a time): {}.\n",
        num(&r["build"]["noop_debug_build_s"]),
        r["build_release_log"].as_str().unwrap_or("not recorded"),
        r["build_zip_log"].as_str().unwrap_or("not recorded"),
    ));
    md
}
