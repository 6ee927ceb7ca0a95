use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use leadflow_testkit::{TestDb, closed_port, drop_namespace, unique_namespace};
use serde_json::Value;

use crate::helpers::get_json;

fn leadflow(db: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadflow"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn");
    command
}

async fn user(db: &TestDb, email: &str) -> Option<(uuid::Uuid, String, String, bool)> {
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let row = sqlx::query_as("select id, role, password_hash, active from users where email = $1")
        .bind(email)
        .fetch_optional(&pool)
        .await
        .expect("query");
    pool.close().await;
    row
}

#[tokio::test]
async fn migrate_creates_the_database_and_can_run_again() {
    let db = TestDb::not_yet_created();
    for run in 1..=2 {
        let output = leadflow(&db).arg("migrate").output().expect("runs");
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("up to date"));
    }
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .expect("database exists");
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&pool)
        .await
        .expect("schema");
    assert_eq!(users, 0);
    pool.close().await;
}

#[tokio::test]
async fn migrate_explains_an_unreachable_database() {
    let port = closed_port().await;
    let db = TestDb::not_yet_created();
    let output = leadflow(&db)
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:hunter2-secret@127.0.0.1:{port}/x"),
        )
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connection_refused"), "{stderr}");
    assert!(stderr.contains("Start PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn admin_create_makes_an_admin_and_resets_an_existing_one() {
    let db = TestDb::not_yet_created();
    let create = |password: &str| {
        leadflow(&db)
            .args([
                "admin",
                "create",
                "--email",
                " Boss@Example.COM ",
                "--name",
                "The Boss",
            ])
            .env("LEADFLOW_ADMIN_PASSWORD", password)
            .output()
            .expect("runs")
    };
    let output = create("first-password-123");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (id, role, first_hash, active) = user(&db, "boss@example.com").await.expect("admin row");
    assert_eq!(role, "admin");
    assert!(active);
    assert!(first_hash.starts_with("$argon2id$"), "{first_hash}");
    assert!(!first_hash.contains("first-password-123"));

    let output = create("second-password-456");
    assert!(output.status.success());
    let (same_id, _, second_hash, _) = user(&db, "boss@example.com").await.expect("admin row");
    assert_eq!(same_id, id, "reset, not duplicated");
    assert_ne!(second_hash, first_hash);

    let output = create("short");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("8 to 128 characters"));
}

/// Reads the child's stdout line by line on a thread, so the test can wait for a line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn url_after(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_end_matches("/health").to_owned())
        .unwrap_or_else(|| panic!("no {label} line in {lines:?}"))
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn up_migrates_starts_all_services_prints_next_steps_and_keeps_its_jwt_secret() {
    let db = TestDb::not_yet_created();
    let namespace = unique_namespace();
    let state_dir = std::env::temp_dir().join(format!("leadflow-up-{namespace}"));

    for run in 1..=2 {
        let mut child = leadflow(&db)
            .arg("up")
            .env("GATEWAY_ADDR", "127.0.0.1:0")
            .env("SCORER_ADDR", "127.0.0.1:0")
            .env("NOTIFIER_ADDR", "127.0.0.1:0")
            .env("LEADFLOW_NAMESPACE", &namespace)
            .env("LEADFLOW_STATE_DIR", &state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let rx = lines_of(&mut child);
        let mut lines = Vec::new();
        while !lines
            .iter()
            .any(|l: &String| l.starts_with("Stop with Ctrl-C"))
        {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("banner printed");
            lines.push(line);
        }
        let text = lines.join("\n");
        if run == 1 {
            assert!(text.contains("Generated a JWT secret"), "{text}");
        } else {
            assert!(text.contains("Using the JWT secret kept in"), "{text}");
        }
        assert!(text.contains("Next: open"), "{text}");

        for (label, service) in [
            ("gateway", "gateway"),
            ("scorer", "scorer"),
            ("notifier", "notifier"),
        ] {
            let base = url_after(&lines, label);
            let health: Value = crate::helpers::wait_until_healthy(&base).await;
            assert_eq!(health["service"], service);
        }
        let (status, _) = get_json(&format!("{}/readyz", url_after(&lines, "gateway"))).await;
        assert_eq!(status, 200);

        terminate(&child);
        let exit = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(exit.success(), "SIGTERM ends leadflow up cleanly: {exit:?}");
    }
    let secret = std::fs::read_to_string(state_dir.join("jwt_secret")).expect("secret kept");
    assert!(secret.len() >= 32);
    let _ = std::fs::remove_dir_all(state_dir);
    drop_namespace(&namespace).await;
}
