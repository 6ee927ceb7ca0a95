//! A gateway and one or more notifier processes (in this test process, on free ports), sharing a
//! fresh database and NATS namespace, plus clients that read SSE and WebSocket streams.

use std::time::Duration;

use clap::Parser as _;
use futures::StreamExt as _;
use leadflow_events::{Envelope, Namespace};
use leadflow_platform::{access::AccessTokens, config::DatabaseUrl, db};
use leadflow_testkit::{TestDb, drop_namespace, eventually, nats_url, unique_namespace};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";

pub struct TestApp {
    pub gateway: String,
    pub notifiers: Vec<String>,
    pub pool: sqlx::PgPool,
    pub ns: Namespace,
    pub jetstream: async_nats::jetstream::Context,
    pub client: reqwest::Client,
    tokens: AccessTokens,
    token: CancellationToken,
    /// One token per notifier, so a test can stop one of them.
    notifier_tokens: Vec<CancellationToken>,
    running: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

pub struct TestUser {
    pub id: Uuid,
    pub token: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(1, &[]).await
    }

    /// `notifiers` notifier processes, each started with `extra` flags.
    pub async fn spawn_with(notifiers: usize, extra: &[&str]) -> Self {
        leadflow_testkit::show_logs();
        let db = TestDb::empty().await;
        db::migrate(&db.url.parse::<DatabaseUrl>().expect("url"))
            .await
            .expect("migrate");
        let namespace = unique_namespace();
        let token = CancellationToken::new();
        let common = [
            "--database-url",
            &db.url,
            "--nats-url",
            &nats_url(),
            "--leadflow-namespace",
            &namespace,
            "--health-probe-interval",
            "200ms",
            "--shutdown-timeout",
            "5s",
            "--jwt-secret",
            JWT_SECRET,
        ]
        .map(str::to_owned);
        let mut gateway_args = vec![
            "gateway".to_owned(),
            "--gateway-addr".into(),
            "127.0.0.1:0".into(),
            "--api-rate-per-token".into(),
            "100000/1m".into(),
        ];
        gateway_args.extend(common.iter().cloned());
        let gateway = leadflow_gateway::build(
            leadflow_gateway::GatewayConfig::try_parse_from(gateway_args).expect("config"),
            token.clone(),
        )
        .await
        .expect("gateway starts");
        let gateway_url = format!("http://{}", gateway.local_addr());
        let mut running = vec![tokio::spawn(gateway.run_until_stopped())];
        let mut urls = Vec::new();
        let mut notifier_tokens = Vec::new();
        for _ in 0..notifiers {
            let mut args = vec![
                "notifier".to_owned(),
                "--notifier-addr".into(),
                "127.0.0.1:0".into(),
                "--notify-heartbeat".into(),
                "1s".into(),
            ];
            args.extend(common.iter().cloned());
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let own = token.child_token();
            let notifier = leadflow_notifier::build(
                leadflow_notifier::NotifierConfig::try_parse_from(args).expect("config"),
                own.clone(),
            )
            .await
            .expect("notifier starts");
            urls.push(format!("http://{}", notifier.local_addr()));
            running.push(tokio::spawn(notifier.run_until_stopped()));
            notifier_tokens.push(own);
        }
        for base in urls.iter().chain([&gateway_url]) {
            let ready = format!("{base}/readyz");
            eventually(Duration::from_secs(20), "services to be ready", || async {
                let status = reqwest::get(&ready).await.ok()?.status();
                (status == 200).then_some(())
            })
            .await;
        }
        let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
        let client = async_nats::connect(nats_url()).await.expect("nats");
        Self {
            gateway: gateway_url,
            notifiers: urls,
            pool,
            ns: Namespace::parse(&namespace).expect("namespace"),
            jetstream: async_nats::jetstream::new(client),
            client: reqwest::Client::new(),
            tokens: AccessTokens::new(&SecretString::from(JWT_SECRET)),
            token,
            notifier_tokens,
            running,
            _db: db,
        }
    }

    /// A user with `role`, and an access token as the gateway would issue it.
    pub async fn user(&self, role: &str) -> TestUser {
        let email = format!(
            "{role}-{}@example.com",
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let id: Uuid = sqlx::query_scalar(
            "insert into users (email, name, password_hash, role) values ($1, $2, 'not-a-hash', $3) returning id",
        )
        .bind(&email)
        .bind(format!("Test {role}"))
        .bind(role)
        .fetch_one(&self.pool)
        .await
        .expect("insert user");
        let token = self
            .tokens
            .issue(id, role, Duration::from_secs(900))
            .expect("token");
        TestUser { id, token }
    }

    /// A user whose token belongs to a sign-in (refresh-token family), as a login issues; the
    /// second value is that sign-in, to end it as a logout would.
    pub async fn user_signed_in(&self, role: &str) -> (TestUser, Uuid) {
        let user = self.user(role).await;
        let family = Uuid::now_v7();
        sqlx::query(
            "insert into refresh_tokens (user_id, token_hash, family_id, expires_at)
             values ($1, $2, $3, now() + interval '1 day')",
        )
        .bind(user.id)
        .bind(Uuid::new_v4().as_bytes().to_vec())
        .bind(family)
        .execute(&self.pool)
        .await
        .expect("refresh token");
        let token = self
            .tokens
            .issue_in_session(user.id, role, Some(family), Duration::from_secs(900))
            .expect("token");
        (TestUser { id: user.id, token }, family)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.gateway))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A lead created by `manager` and assigned to `assignee` through the gateway.
    pub async fn assign_new_lead(&self, manager: &TestUser, assignee: Uuid) -> (Uuid, Uuid) {
        let (status, lead) = self
            .call(
                "POST",
                "/api/leads",
                &manager.token,
                Some(json!({"first_name": "Ada", "last_name": "Lovelace"})),
            )
            .await;
        assert_eq!(status, 201, "{lead}");
        let lead_id: Uuid = lead["id"].as_str().expect("id").parse().expect("uuid");
        let (status, assignment) = self
            .call(
                "POST",
                "/api/assignments",
                &manager.token,
                Some(json!({"lead_id": lead_id, "assignee_id": assignee, "note": "call <today>"})),
            )
            .await;
        assert_eq!(status, 201, "{assignment}");
        let assignment_id = assignment["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        (lead_id, assignment_id)
    }

    /// Publishes `event` to JetStream under `msg_id` (another id than the event's simulates a
    /// redelivery that JetStream's duplicate window does not catch).
    pub async fn publish(&self, event: &Envelope, msg_id: &str) {
        let subject = self.ns.subject(&event.kind);
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(event.to_json().into())
            .message_id(msg_id);
        self.jetstream
            .send_publish(subject, message)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Waits until the count `sql` selects is `n`; panics naming `what` after `within`.
    pub async fn count_reaches(&self, sql: &str, n: i64, within: Duration, what: &str) {
        eventually(within, what, || async {
            (self.count(sql).await == n).then_some(())
        })
        .await;
    }

    pub async fn ticket(&self, user: &TestUser) -> String {
        let (status, body) = self
            .call("POST", "/api/notifications/ticket", &user.token, None)
            .await;
        assert_eq!(status, 201, "{body}");
        body["ticket"].as_str().expect("ticket").to_owned()
    }

    /// Stops the `i`th notifier only.
    pub fn stop_notifier(&self, i: usize) {
        self.notifier_tokens[i].cancel();
    }

    pub async fn stop(self) {
        self.token.cancel();
        for task in self.running {
            task.await.expect("task").expect("clean stop");
        }
        self.pool.close().await;
        drop_namespace(self.ns.as_str()).await;
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    /// Heartbeat comments seen so far.
    pub heartbeats: usize,
}

impl SseClient {
    /// Opens the stream; `auth` is a bearer token, a ticket or neither.
    pub async fn open(
        base: &str,
        auth: Auth<'_>,
        last_event_id: Option<i64>,
    ) -> Result<Self, (u16, Value)> {
        let mut url = format!("{base}/api/notifications/stream");
        let mut request = reqwest::Client::new().get(&url);
        match auth {
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::Ticket(ticket) => {
                url.push_str(&format!("?ticket={ticket}"));
                request = reqwest::Client::new().get(&url);
            }
            Auth::None => {}
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        if status != 200 {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(content_type, "application/problem+json");
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        Ok(Self {
            response,
            buffer: String::new(),
            heartbeats: 0,
        })
    }

    /// The next event within `wait`; `None` when nothing came (or the stream ended).
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.heartbeats += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                event.data = serde_json::from_str(&data).expect("JSON data");
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Whether the server ended the stream within `wait`.
    pub async fn ended(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }
}

#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Bearer(&'a str),
    Ticket(&'a str),
    None,
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket; an HTTP refusal comes back as its status.
pub async fn open_ws(base: &str, auth: Auth<'_>, query: &str) -> Result<WsStream, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let ws_base = base.replacen("http://", "ws://", 1);
    let mut url = format!("{ws_base}/api/notifications/ws?{query}");
    if let Auth::Ticket(ticket) = auth {
        url.push_str(&format!("&ticket={ticket}"));
    }
    let mut request = url.into_client_request().expect("request");
    if let Auth::Bearer(token) = auth {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(stream),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("websocket: {e}"),
    }
}

/// The next notification on a WebSocket within `wait` (pings are skipped).
pub async fn ws_next(ws: &mut WsStream, wait: Duration) -> Option<Value> {
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return Some(serde_json::from_str(&text).expect("JSON"));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A real HTTP endpoint for webhooks: records each request and answers with the next status
/// from `script` (then 200).
pub struct Receiver {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

impl Receiver {
    pub async fn start(script: Vec<u16>) -> Self {
        use std::sync::{Arc, Mutex};
        let requests: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (seen, plan) = (requests.clone(), script.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (seen, plan) = (seen.clone(), plan.clone());
                async move {
                    seen.lock().expect("lock").push((headers, body));
                    let status = plan.lock().expect("lock").pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, requests }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    pub fn get(&self, i: usize) -> (axum::http::HeaderMap, String) {
        self.requests.lock().expect("lock")[i].clone()
    }
}

/// A tiny SMTP server speaking just enough of the protocol for a client to hand it mail.
pub struct SmtpServer {
    pub addr: std::net::SocketAddr,
    pub messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// While set, the reply to `MAIL FROM` (e.g. a 530 "authenticate first").
    pub mail_reply: std::sync::Arc<std::sync::Mutex<Option<&'static str>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start_on(port: u16) -> Self {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind SMTP port");
        let addr = listener.local_addr().expect("address");
        let messages: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let mail_reply: std::sync::Arc<std::sync::Mutex<Option<&'static str>>> = Default::default();
        let store = messages.clone();
        let refusal = mail_reply.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                let refusal = refusal.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 test.local ESMTP\r\n").await;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_ascii_uppercase();
                        let refused = *refusal.lock().expect("lock");
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 test.local\r\n",
                            "MAIL" if refused.is_some() => refused.unwrap_or_default().as_bytes(),
                            "DATA" => {
                                let _ = write.write_all(b"354 end with .\r\n").await;
                                let mut data = String::new();
                                while let Ok(Some(line)) = lines.next_line().await {
                                    if line == "." {
                                        break;
                                    }
                                    data.push_str(&line);
                                    data.push('\n');
                                }
                                store.lock().expect("lock").push(data);
                                b"250 queued\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 OK\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            messages,
            mail_reply,
            task,
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.messages.lock().expect("lock").clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
