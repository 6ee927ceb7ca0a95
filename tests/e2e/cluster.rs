//! deploy/nats/cluster.conf, run for real: three local nodes form a JetStream cluster, leadflow
//! creates its streams with three replicas on it, and losing a node loses no acknowledged event.

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use leadflow_events::{Envelope, Stream};
use leadflow_platform::{bus::Bus, config::PlatformConfig};
use leadflow_testkit::{eventually, unique_namespace};

use crate::processes::{free_port, nats_server_binary};

struct Node {
    child: Child,
    client_port: u16,
    monitor_port: u16,
}

/// Three `nats-server` processes from the deployment's configuration, on free ports, each with its
/// own store directory (removed on drop).
struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("leadflow-cluster-{}", unique_namespace()));
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/cluster.conf");
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let nodes = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cluster_port)| {
                let (client_port, monitor_port) = (free_port(), free_port());
                let child = Command::new(nats_server_binary())
                    .args(["-c", config.to_str().expect("utf-8 path")])
                    .env("NATS_SERVER_NAME", format!("node-{i}"))
                    .env("NATS_CLIENT_PORT", client_port.to_string())
                    .env("NATS_CLUSTER_PORT", cluster_port.to_string())
                    .env("NATS_MONITOR_PORT", monitor_port.to_string())
                    .env("NATS_STORE_DIR", dir.join(format!("node-{i}")))
                    .env("NATS_ROUTE_1", &routes[0])
                    .env("NATS_ROUTE_2", &routes[1])
                    .env("NATS_ROUTE_3", &routes[2])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("nats-server starts (Debian package nats-server)");
                Node {
                    child,
                    client_port,
                    monitor_port,
                }
            })
            .collect();
        Self { nodes, dir }
    }

    async fn wait_until_ready(&self) {
        let http = reqwest::Client::new();
        for node in &self.nodes {
            let url = format!(
                "http://127.0.0.1:{}/healthz?js-enabled-only=true",
                node.monitor_port
            );
            eventually(
                Duration::from_secs(30),
                "a cluster node to be ready",
                || async {
                    let response = http.get(&url).send().await.ok()?;
                    response.status().is_success().then_some(())
                },
            )
            .await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_three_node_cluster_keeps_replicated_streams_and_every_acknowledged_event_when_a_node_dies()
 {
    let mut cluster = Cluster::start();
    cluster.wait_until_ready().await;
    let namespace = unique_namespace();
    // Only the first node is given: the client learns the others from it.
    let url = format!("nats://127.0.0.1:{}", cluster.nodes[0].client_port);
    let config = PlatformConfig::try_from_args([
        "--nats-url",
        url.as_str(),
        "--leadflow-namespace",
        namespace.as_str(),
        "--nats-stream-replicas",
        "3",
    ])
    .expect("config");
    let bus = Bus::connect(&config.nats, "cluster-test")
        .await
        .expect("client");
    // The cluster elects its metadata leader in its own time.
    eventually(
        Duration::from_secs(30),
        "the streams to be created",
        || async { bus.ensure_topology(&[]).await.ok() },
    )
    .await;

    let stream_name = bus.namespace().stream_name(Stream::Engagement);
    let stream = bus
        .jetstream()
        .get_stream(&stream_name)
        .await
        .expect("stream");
    let info = stream.get_info().await.expect("info");
    assert_eq!(info.config.num_replicas, 3);
    let cluster_info = info.cluster.clone().expect("cluster information");
    assert_eq!(cluster_info.replicas.len(), 2, "{cluster_info:?}");

    let publish = |n: usize| {
        let bus = &bus;
        async move {
            let event = Envelope::new("engagement.page_view", "test")
                .expect("event")
                .with_data(serde_json::json!({"n": n}));
            let ack = bus
                .jetstream()
                .publish(bus.namespace().subject(&event.kind), event.to_json().into())
                .await
                .ok()?;
            tokio::time::timeout(Duration::from_secs(2), ack)
                .await
                .ok()?
                .ok()
        }
    };
    eventually(Duration::from_secs(10), "the first publish", || publish(1)).await;

    // Kill the stream's leader if the client is not on it, else another node: either way the two
    // left hold a quorum, elect a leader if needed, and keep acknowledging.
    let leader = cluster_info.leader.unwrap_or_default();
    let victim = (0..3)
        .rev()
        .find(|i| format!("node-{i}") == leader && *i != 0)
        .unwrap_or(2);
    cluster.nodes[victim].child.kill().expect("kill -9");
    cluster.nodes[victim].child.wait().expect("reaped");
    eventually(
        Duration::from_secs(30),
        "a publish with a node down",
        || publish(2),
    )
    .await;

    let messages = eventually(
        Duration::from_secs(10),
        "both events in the stream",
        || async {
            let info = stream.get_info().await.ok()?;
            (info.state.messages == 2).then_some(info.state.messages)
        },
    )
    .await;
    assert_eq!(messages, 2);
}
