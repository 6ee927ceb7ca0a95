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

/// The `KEY` of every `- name: KEY` / `- {name: KEY, ...}` line and every `KEY: value` line.
fn variables_in(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|line| {
            let line = line
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches('{');
            let key = line.strip_prefix("name: ").unwrap_or(line);
            let key: String = key
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            (key.len() > 3 && key.contains('_')).then_some(key)
        })
        .collect()
}

#[test]
fn kubernetes_manifests_probe_readyz_and_livez_and_set_only_variables_the_services_read() {
    let known = known_variables();
    let kustomization = repo_file("deploy/kustomization.yaml");
    let listed: Vec<&str> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- k8s/"))
        .collect();
    let present: BTreeSet<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s"))
            .expect("deploy/k8s")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        present,
        "deploy/kustomization.yaml lists every manifest"
    );

    let shared = variables_in(&repo_file("deploy/k8s/config.yaml"));
    assert!(
        shared.contains(&"NATS_STREAM_REPLICAS".to_owned()),
        "{shared:?}"
    );
    for (service, port) in [("gateway", 8080), ("scorer", 8081), ("notifier", 8082)] {
        let manifest = repo_file(&format!("deploy/k8s/{service}.yaml"));
        let variables = variables_in(&manifest);
        assert!(
            variables.contains(&"DATABASE_URL".to_owned()),
            "{service}: {variables:?}"
        );
        for variable in variables.iter().chain(&shared) {
            assert!(
                known.contains(variable),
                "deploy/k8s sets {variable} for {service}, which no service reads"
            );
        }
        for expected in [
            format!("command: [\"{service}\"]"),
            format!("containerPort: {port}"),
            format!("value: \"0.0.0.0:{port}\""),
            "readinessProbe:\n            httpGet: {path: /readyz, port: http}".to_owned(),
            "livenessProbe:\n            httpGet: {path: /livez, port: http}".to_owned(),
        ] {
            assert!(
                manifest.contains(&expected),
                "{service}.yaml lacks {expected}"
            );
        }
    }
    let autoscaling = repo_file("deploy/k8s/scorer-autoscaling.yaml");
    assert!(
        autoscaling.contains("consumer: scorer_engagement")
            && autoscaling.contains("stream: ENGAGEMENT")
    );
}
