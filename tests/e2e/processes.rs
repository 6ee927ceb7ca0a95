//! Real processes for the end-to-end tests: the service binaries, and a `nats-server` of the test's
//! own (free port, own store directory) that it may kill, pause and restart without touching the
//! machine's shared server.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use leadflow_testkit::{eventually, unique_namespace};
use serde_json::Value;

use crate::helpers::JWT_SECRET;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Debian installs it in /usr/sbin, which is not on every user's PATH.
pub fn nats_server_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("nats-server")
    }
}

/// Sends `signal` (a `kill` name such as `STOP`) to a child; the test's own processes only.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// SIGKILL and reap. Quiet, as it also runs from `Drop`: killing a child that already exited
/// succeeds, and a failed kill leaves nothing a test could do about it.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A single JetStream server for one test. Its store directory outlives a kill, as a real
/// server's disk would, and goes when the value is dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    dir: PathBuf,
}

impl NatsServer {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("leadflow-nats-{}", unique_namespace()));
        let mut server = Self {
            child: None,
            port: free_port(),
            monitor_port: free_port(),
            dir,
        };
        server.spawn();
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-js", "-sd"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (Debian package nats-server)");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let url = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor_port
        );
        let http = reqwest::Client::new();
        eventually(
            Duration::from_secs(20),
            "the test's nats-server to be ready",
            || async {
                let response = http.get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// `kill -9`: no goodbye to clients, nothing flushed beyond what the OS already has.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts again on the same port and store directory.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart follows kill");
        self.spawn();
        self.wait_ready().await;
    }

    /// `SIGSTOP`: the port stays open and connections stay up, but nothing answers.
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("running"), "STOP");
    }

    pub fn resume(&self) {
        signal(self.child.as_ref().expect("running"), "CONT");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) process dies of SIGKILL too; nothing to resume first.
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service binaries sit next to `leadflow` once `cargo test --workspace` built them.
fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_leadflow")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`), which build it",
        path.display()
    );
    path
}

/// One service process (`gateway`, `scorer` or `notifier`) on a port of its own, which keeps its
/// port and environment across a kill and restart.
pub struct Service {
    child: Option<Child>,
    name: &'static str,
    env: Vec<(String, String)>,
    pub base: String,
}

impl Service {
    /// Starts `name` against `db_url` and `nats_url` in `namespace`; `extra` adds or overrides
    /// environment variables.
    pub fn start(
        name: &'static str,
        db_url: &str,
        nats_url: &str,
        namespace: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", db_url),
            ("NATS_URL", nats_url),
            ("LEADFLOW_NAMESPACE", namespace),
            ("JWT_SECRET", JWT_SECRET),
            ("HEALTH_PROBE_INTERVAL", "200ms"),
            ("RUST_LOG", "warn"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.push((
            format!("{}_ADDR", name.to_uppercase()),
            format!("127.0.0.1:{port}"),
        ));
        let mut service = Self {
            child: None,
            name,
            env,
            base: format!("http://127.0.0.1:{port}"),
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let child = Command::new(binary(self.name))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("service starts");
        self.child = Some(child);
    }

    /// `kill -9`, as an OOM kill or a lost node would.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// SIGTERM, as an orchestrator stops a pod: the service must drain and exit with success
    /// within its shutdown timeout (and some slack).
    pub async fn terminate(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        signal(child, "TERM");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not stop within 20 s of SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.child = None;
        assert!(
            status.success(),
            "{} stopped uncleanly on SIGTERM: {status}",
            self.name
        );
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart follows kill");
        self.spawn();
    }

    /// Waits for `/readyz` to answer 200 (database and NATS reachable, streams set up).
    pub async fn ready(&self, http: &reqwest::Client) {
        let url = format!("{}/readyz", self.base);
        eventually(
            Duration::from_secs(30),
            &format!("{} to be ready", self.name),
            || async {
                let response = http.get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    pub async fn health(&self, http: &reqwest::Client) -> Option<Value> {
        http.get(format!("{}/health.json", self.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
