use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";

/// The `gateway` binary as an operator would run it, with a clean environment plus `envs`, its
/// output captured so tests can check what it logs.
pub struct GatewayProcess {
    child: Child,
    pub base: String,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn gateway_command(envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (key, value) in envs {
        command.env(key, value);
    }
    command
}

impl GatewayProcess {
    pub fn spawn(envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = gateway_command(envs)
            .env("GATEWAY_ADDR", &addr)
            .env("HEALTH_PROBE_INTERVAL", "200ms")
            .env("DB_ACQUIRE_TIMEOUT", "1s")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for mut stream in streams {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .expect("output")
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }));
        }
        Self {
            child,
            base: format!("http://{addr}"),
            output,
            readers,
        }
    }

    /// SIGTERM, then everything the process printed; asserts a clean exit.
    pub async fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let mut child = self.child;
        let exit = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let output = self.output.lock().expect("output").clone();
        assert!(exit.success(), "gateway exited with {exit:?}:\n{output}");
        output
    }
}

pub async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("request");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

pub async fn health_once(base: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let url = format!("{base}/health.json");
    leadflow_testkit::eventually(
        Duration::from_secs(20),
        &format!("{url} to match"),
        || async {
            let response = reqwest::get(&url).await.ok()?;
            let health: Value = response.json().await.ok()?;
            pred(&health).then_some(health)
        },
    )
    .await
}
