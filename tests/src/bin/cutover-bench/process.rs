//! One function binary serving a runtime API of its own.

use super::*;

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) api: RuntimeApi,
}

impl Running {
    pub(crate) async fn spawn(function: Function, env: &[(String, String)]) -> (Running, Instant) {
        Running::spawn_binary(function.as_str(), env).await
    }

    pub(crate) async fn spawn_binary(binary: &str, env: &[(String, String)]) -> (Running, Instant) {
        Running::spawn_path(&release_dir().join(binary), env).await
    }

    pub(crate) async fn spawn_path(path: &Path, env: &[(String, String)]) -> (Running, Instant) {
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

    pub(crate) async fn wait_ready(&self, started: Instant) -> Duration {
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
    pub(crate) fn peak_rss_mib(&self) -> f64 {
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
