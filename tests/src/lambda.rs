//! The built function binaries served by `cargo lambda watch --only-lambda-apis`, invoked with
//! `cargo lambda invoke`: the same path a developer uses by hand.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover::Function;

use crate::moto::{free_port, repo_root};

pub const FUNCTIONS: [Function; 4] = [
    Function::Provision,
    Function::RegisterTarget,
    Function::SwitchListener,
    Function::Cleanup,
];

pub struct LambdaEmulator {
    pub port: u16,
    watch: Child,
    functions: Vec<Child>,
    cargo_lambda: PathBuf,
}

fn cargo_lambda_binary() -> PathBuf {
    let local = repo_root().join(".venv/bin/cargo-lambda");
    if local.exists() {
        local
    } else {
        PathBuf::from("cargo-lambda")
    }
}

/// Where `cargo build --workspace` put the function binaries.
pub fn binary_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CUTOVER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug")
}

impl LambdaEmulator {
    /// Starts the emulator and one process per function, each with `env` (plus the Runtime API
    /// variables), logging to `log_dir/<function>.log`.
    pub fn start(env: &[(String, String)], log_dir: &Path) -> Result<LambdaEmulator, String> {
        std::fs::create_dir_all(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let port = free_port();
        let cargo_lambda = cargo_lambda_binary();
        let watch_log = std::fs::File::create(log_dir.join("cargo-lambda-watch.log"))
            .map_err(|e| e.to_string())?;
        let watch = Command::new(&cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .stdout(Stdio::from(
                watch_log.try_clone().map_err(|e| e.to_string())?,
            ))
            .stderr(Stdio::from(watch_log))
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {} (run `make setup`): {e}",
                    cargo_lambda.display()
                )
            })?;
        let mut emulator = LambdaEmulator {
            port,
            watch,
            functions: Vec::new(),
            cargo_lambda,
        };
        emulator.wait_listening()?;
        for function in FUNCTIONS {
            let binary = binary_dir().join(function.as_str());
            if !binary.exists() {
                return Err(format!(
                    "{} is not built: run `cargo build --workspace`",
                    binary.display()
                ));
            }
            let log = std::fs::File::create(log_dir.join(format!("{}.log", function.as_str())))
                .map_err(|e| e.to_string())?;
            let child = Command::new(&binary)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env(
                    "AWS_LAMBDA_RUNTIME_API",
                    format!("http://127.0.0.1:{port}/.rt/{}", function.as_str()),
                )
                .env("AWS_LAMBDA_FUNCTION_NAME", function.as_str())
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("starting {}: {e}", binary.display()))?;
            emulator.functions.push(child);
        }
        Ok(emulator)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.watch.try_wait() {
                return Err(format!("cargo lambda watch exited: {status}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "cargo lambda watch did not listen on {} within 30s",
            self.port
        ))
    }

    /// `cargo lambda invoke <function> --data-file <event>`: the function's response, or its error.
    pub fn invoke(&self, function: Function, event_file: &Path) -> Result<String, String> {
        let output = Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", function.as_str(), "--data-file"])
            .arg(event_file)
            .args([
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--output-format",
                "json",
            ])
            .output()
            .map_err(|e| format!("cargo lambda invoke: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for LambdaEmulator {
    fn drop(&mut self) {
        for child in self
            .functions
            .iter_mut()
            .chain(std::iter::once(&mut self.watch))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
