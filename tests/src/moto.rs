//! A moto server on 127.0.0.1, on a free port, stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub url: String,
}

/// The repository root (the workspace), whatever directory cargo runs the tests from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repo")
        .to_path_buf()
}

fn moto_server_binary() -> Option<PathBuf> {
    if let Ok(explicit) = std::env::var("CUTOVER_MOTO_SERVER") {
        return Some(PathBuf::from(explicit));
    }
    let local = repo_root().join(".venv/bin/moto_server");
    local.exists().then_some(local)
}

fn python_present() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Moto {
    /// Starts moto on a free loopback port. A test that needs it and cannot have it fails,
    /// saying why: nothing reports ok for a test that did not run.
    pub fn start() -> Moto {
        let Some(binary) = moto_server_binary() else {
            let why = if python_present() {
                "moto_server is not installed"
            } else {
                "python3 is absent, so moto cannot be installed"
            };
            panic!("{why}: run `make setup` (it creates .venv with moto[server]), or point CUTOVER_MOTO_SERVER at a moto_server");
        };
        // Port 0: moto binds a free port itself and says which. Picking one here and handing it
        // over would race with the other tests doing the same.
        let mut child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let Some(port) = reported_port(child.stderr.take().expect("piped stderr")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("moto_server did not report the port it listens on within 60s");
        };
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        moto.wait_ready(port);
        moto
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited at start: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen on {port} within 60s");
    }
}

/// The port moto says it runs on (` * Running on http://127.0.0.1:PORT` on stderr). Its stderr
/// is drained for the rest of its life, so its request log never blocks it.
fn reported_port(stderr: std::process::ChildStderr) -> Option<u16> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let port = line
                .split("Running on http://127.0.0.1:")
                .nth(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|digits| digits.parse::<u16>().ok());
            if let Some(port) = port {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(port);
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).ok()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
