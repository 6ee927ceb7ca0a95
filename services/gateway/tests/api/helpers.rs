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

/// A gateway started in this test's process on a free port, with its own database and NATS
/// namespace, and helpers to make users and call the API as them.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: sqlx::PgPool,
    pub namespace: String,
    /// Dropped, with the database, when the app is.
    _db: leadflow_testkit::TestDb,
    token: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub struct TestUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

pub const PASSWORD: &str = "correct-horse-battery-staple";

/// One argon2 hash of [`PASSWORD`] for all test users: hashing is the slow part of making users.
async fn password_hash() -> String {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async {
        leadflow_gateway::auth::password::hash(secrecy::SecretString::from(PASSWORD))
            .await
            .expect("hash")
    })
    .await
    .clone()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra: &[&str]) -> Self {
        Self::start(extra, true).await
    }

    /// Started without waiting for readiness (for tests that take a dependency away).
    pub async fn spawn_degraded(extra: &[&str]) -> Self {
        Self::start(extra, false).await
    }

    async fn start(extra: &[&str], wait_ready: bool) -> Self {
        use clap::Parser as _;
        leadflow_testkit::show_logs();
        let db = leadflow_testkit::TestDb::empty().await;
        let url: leadflow_platform::config::DatabaseUrl = db.url.parse().expect("url");
        leadflow_platform::db::migrate(&url).await.expect("migrate");
        let namespace = leadflow_testkit::unique_namespace();
        let mut args = vec![
            "gateway",
            "--gateway-addr",
            "127.0.0.1:0",
            "--jwt-secret",
            JWT_SECRET,
            "--database-url",
            &db.url,
            "--leadflow-namespace",
            &namespace,
            "--health-probe-interval",
            "200ms",
            "--api-rate-per-token",
            "100000/1m",
            "--login-rate-per-ip",
            "100000/1m",
        ];
        args.extend_from_slice(extra);
        let config = leadflow_gateway::GatewayConfig::try_parse_from(args).expect("config");
        let token = tokio_util::sync::CancellationToken::new();
        let server = leadflow_gateway::build(config, token.clone())
            .await
            .expect("gateway starts");
        let base = format!("http://{}", server.local_addr());
        let running = tokio::spawn(server.run_until_stopped());
        let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
        if wait_ready {
            let ready = format!("{base}/readyz");
            leadflow_testkit::eventually(
                Duration::from_secs(20),
                "the gateway to be ready",
                || async {
                    let status = reqwest::get(&ready).await.ok()?.status();
                    (status == 200).then_some(())
                },
            )
            .await;
        }
        Self {
            base,
            client: reqwest::Client::new(),
            pool,
            namespace,
            _db: db,
            token,
            running,
        }
    }

    pub fn db_name(&self) -> String {
        self._db.name.clone()
    }

    /// Stops a gateway whose dependencies a test took away (the pool may be unusable).
    pub async fn stop_degraded(self) {
        self.token.cancel();
        let _ = self.running.await;
        leadflow_testkit::drop_namespace(&self.namespace).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A user with `role` ("admin", "manager", "sales_rep"), signed in.
    pub async fn user(&self, role: &str) -> TestUser {
        let email = format!(
            "{role}-{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let id: uuid::Uuid = sqlx::query_scalar(
            "insert into users (email, name, password_hash, role) values ($1, $2, $3, $4) returning id",
        )
        .bind(&email)
        .bind(format!("Test {role}"))
        .bind(password_hash().await)
        .bind(role)
        .fetch_one(&self.pool)
        .await
        .expect("insert user");
        let (status, body) = self
            .call(
                "POST",
                "/api/auth/login",
                None,
                Some(serde_json::json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 200, "login: {body}");
        TestUser {
            id,
            email,
            token: body["access_token"].as_str().expect("token").to_owned(),
            refresh: body["refresh_token"].as_str().expect("refresh").to_owned(),
        }
    }

    /// Calls the API; the body is parsed as JSON when it is JSON, else returned as a string.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let is_problem = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let text = response.text().await.expect("body");
        let value = if is_problem && !text.is_empty() {
            serde_json::from_str(&text).expect("JSON body")
        } else {
            Value::String(text)
        };
        if status >= 400 && status != 405 {
            assert!(is_problem, "{status} without problem+json: {value}");
        }
        (status, value)
    }

    pub async fn create_lead(&self, token: &str, body: Value) -> Value {
        let (status, lead) = self
            .call("POST", "/api/leads", Some(token), Some(body))
            .await;
        assert_eq!(status, 201, "{lead}");
        lead
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    pub async fn stop(self) {
        self.token.cancel();
        self.running.await.expect("task").expect("clean stop");
        self.pool.close().await;
        leadflow_testkit::drop_namespace(&self.namespace).await;
    }
}
