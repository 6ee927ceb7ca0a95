//! There is no Docker engine here, so the deployment files are checked against the code instead.

use std::{collections::BTreeSet, path::Path, process::Command};

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `[env: NAME` the `leadflow up` command knows (the union of all services' settings).
fn known_variables() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["up", "--help"])
        .output()
        .expect("leadflow up --help");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn docker_compose_sets_only_variables_the_services_read() {
    let known = known_variables();
    assert!(
        known.contains("DATABASE_URL") && known.contains("NOTIFIER_ADDR"),
        "{known:?}"
    );
    let compose = repo_file("docker-compose.yml");
    let mut in_environment = false;
    let mut checked = 0;
    for line in compose.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("environment:") {
            in_environment = true;
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let is_variable =
            !key.is_empty() && key.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        if in_environment && is_variable && !key.starts_with("POSTGRES_") {
            assert!(
                known.contains(key),
                "docker-compose.yml sets {key}, which no service reads"
            );
            checked += 1;
        } else if !is_variable && !trimmed.starts_with("<<") {
            in_environment = false;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} variables found in docker-compose.yml"
    );
    for (service, port) in [("gateway", 8080), ("scorer", 8081), ("notifier", 8082)] {
        assert!(
            compose.contains(&format!("command: [\"{service}\"]")),
            "{service} in compose"
        );
        assert!(
            compose.contains(&format!("\"{port}:{port}\"")),
            "{service} port {port}"
        );
    }
}

#[test]
fn prometheus_scrapes_every_service_on_its_default_port_and_promtool_accepts_it() {
    let config = repo_file("deploy/prometheus.yml");
    for target in ["gateway:8080", "scorer:8081", "notifier:8082"] {
        assert!(
            config.contains(target),
            "deploy/prometheus.yml misses {target}"
        );
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus.yml");
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect("promtool is installed (Debian package `prometheus`; .ci/run installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_dockerfile_builds_every_binary_and_runs_as_non_root() {
    let dockerfile = repo_file("deploy/Dockerfile");
    for binary in ["leadflow", "gateway", "scorer", "notifier"] {
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} not copied"
        );
    }
    assert!(
        dockerfile.contains("--workspace --bins"),
        "the root package alone would build only `leadflow`"
    );
    assert!(dockerfile.contains("USER 10001"));
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
}
