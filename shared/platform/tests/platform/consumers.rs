use async_nats::jetstream::{
    Message,
    consumer::{AckPolicy, PullConsumer, pull},
};
use futures::StreamExt as _;
use leadflow_events::{Namespace, Stream};
use leadflow_platform::bus::{Bus, ConsumerSpec};
use leadflow_testkit::{drop_namespace, nats_url, unique_namespace};

use crate::config;

const WHOLE_STREAM: ConsumerSpec = ConsumerSpec {
    name: "reader_engagement",
    stream: Stream::Engagement,
    filter: "engagement.>",
};
const PART_OF_STREAM: ConsumerSpec = ConsumerSpec {
    name: "reader_scores",
    stream: Stream::Domain,
    filter: "scores.updated",
};

/// Whatever the consumer has for us, up to `max` messages.
pub(crate) async fn fetch(consumer: &PullConsumer, max: usize) -> Vec<Message> {
    let mut fetched = consumer
        .fetch()
        .max_messages(max)
        .messages()
        .await
        .expect("fetch");
    let mut messages = Vec::new();
    while let Some(message) = fetched.next().await {
        messages.push(message.expect("message"));
    }
    messages
}

/// A durable made on the server directly, as an earlier release (or an operator) left it.
async fn durable_as_left(
    bus: &Bus,
    ns: &Namespace,
    stream: Stream,
    config: pull::Config,
) -> PullConsumer {
    bus.jetstream()
        .get_stream(ns.stream_name(stream))
        .await
        .expect("stream")
        .create_consumer(config)
        .await
        .expect("durable")
}

async fn publish(bus: &Bus, subject: String, payload: String) {
    bus.jetstream()
        .publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

async fn bus(namespace: &str, extra: &[&str]) -> Bus {
    let cfg = config(
        "postgres://postgres@127.0.0.1/unused",
        &nats_url(),
        namespace,
        extra,
    );
    Bus::connect(&cfg.nats, "test").await.expect("client")
}

/// A consumer that reads its whole stream has no filter (nats-server 2.9 serves even a filter
/// equal to the stream's subject through the path that stalled drains); one that reads part of
/// a stream keeps its filter.
#[tokio::test]
async fn a_consumer_of_a_whole_stream_has_no_filter_and_one_of_part_keeps_it() {
    let namespace = unique_namespace();
    let bus = bus(&namespace, &[]).await;
    bus.ensure_topology(&[WHOLE_STREAM, PART_OF_STREAM])
        .await
        .expect("topology");
    let ns = Namespace::parse(&namespace).expect("namespace");

    // As the topology set them up; the consume loop looks them up the same way.
    let mut whole = bus.consumer(&WHOLE_STREAM).await.expect("consumer");
    let info = whole.info().await.expect("info");
    assert_eq!(info.config.filter_subject, "");
    let mut part = bus.consumer(&PART_OF_STREAM).await.expect("consumer");
    let info = part.info().await.expect("info");
    assert_eq!(info.config.filter_subject, ns.subject("scores.updated"));

    for subject in ["engagement.email_open", "engagement.page_view"] {
        publish(&bus, ns.subject(subject), "{}".into()).await;
    }
    let subjects: Vec<String> = fetch(&whole, 10)
        .await
        .iter()
        .map(|m| m.subject.to_string())
        .collect();
    assert_eq!(
        subjects,
        [
            ns.subject("engagement.email_open"),
            ns.subject("engagement.page_view")
        ]
    );
    bus.close().await;
    drop_namespace(&namespace).await;
}

/// A durable left by an earlier release (filtered on its whole stream, other settings) is brought
/// to this release's configuration where it stands: what it had acknowledged is not delivered again.
#[tokio::test]
async fn a_durable_from_an_earlier_release_takes_the_new_settings_and_keeps_its_position() {
    let namespace = unique_namespace();
    let bus = bus(
        &namespace,
        &["--nats-ack-wait", "7s", "--nats-max-deliver", "4"],
    )
    .await;
    bus.ensure_topology(&[]).await.expect("streams");
    let ns = Namespace::parse(&namespace).expect("namespace");
    let old = pull::Config {
        durable_name: Some(ns.name(WHOLE_STREAM.name)),
        filter_subject: ns.subject(WHOLE_STREAM.filter),
        ack_policy: AckPolicy::Explicit,
        ack_wait: std::time::Duration::from_secs(30),
        max_deliver: 10,
        ..Default::default()
    };
    let old = durable_as_left(&bus, &ns, Stream::Engagement, old).await;
    for n in 0..3 {
        publish(&bus, ns.subject("engagement.page_view"), format!("{n}")).await;
    }
    // Confirmed acks: the server has recorded them before the update below.
    for message in fetch(&old, 2).await {
        message.double_ack().await.expect("ack");
    }

    let mut current = bus.set_up_consumer(&WHOLE_STREAM).await.expect("consumer");
    let info = current.info().await.expect("info");
    assert_eq!(
        (
            info.config.filter_subject.as_str(),
            info.config.ack_wait,
            info.config.max_deliver
        ),
        ("", std::time::Duration::from_secs(7), 4)
    );
    assert_eq!(
        (info.num_pending, info.ack_floor.stream_sequence),
        (1, 2),
        "the two acknowledged messages stay acknowledged"
    );
    let payloads: Vec<String> = fetch(&current, 10)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["2"]);
    bus.close().await;
    drop_namespace(&namespace).await;
}

/// A durable of part of a stream keeps its filter when it takes new settings; one whose settings the
/// server refuses to change (edited by hand) is read as it stands rather than left unready.
#[tokio::test]
async fn a_partial_durable_keeps_its_filter_and_one_that_cannot_change_is_used_as_it_is() {
    let namespace = unique_namespace();
    let bus = bus(&namespace, &["--nats-ack-wait", "9s"]).await;
    bus.ensure_topology(&[]).await.expect("streams");
    let ns = Namespace::parse(&namespace).expect("namespace");
    durable_as_left(
        &bus,
        &ns,
        Stream::Domain,
        pull::Config {
            durable_name: Some(ns.name(PART_OF_STREAM.name)),
            filter_subject: ns.subject(PART_OF_STREAM.filter),
            ack_policy: AckPolicy::Explicit,
            ack_wait: std::time::Duration::from_secs(30),
            ..Default::default()
        },
    )
    .await;
    let mut part = bus
        .set_up_consumer(&PART_OF_STREAM)
        .await
        .expect("consumer");
    let info = part.info().await.expect("info");
    assert_eq!(
        (info.config.filter_subject.clone(), info.config.ack_wait),
        (
            ns.subject(PART_OF_STREAM.filter),
            std::time::Duration::from_secs(9)
        )
    );

    // `max_waiting` cannot be changed on an existing durable, so this release's update is refused.
    durable_as_left(
        &bus,
        &ns,
        Stream::Engagement,
        pull::Config {
            durable_name: Some(ns.name(WHOLE_STREAM.name)),
            ack_policy: AckPolicy::Explicit,
            max_waiting: 7,
            ..Default::default()
        },
    )
    .await;
    let mut whole = bus
        .set_up_consumer(&WHOLE_STREAM)
        .await
        .expect("the durable as it is");
    let info = whole.info().await.expect("info");
    assert_eq!(
        (info.config.max_waiting, info.config.ack_wait),
        (7, std::time::Duration::from_secs(30)),
        "kept its settings"
    );
    bus.close().await;
    drop_namespace(&namespace).await;
}

/// The durable sets no limit of its own on unacknowledged messages (each consume loop bounds what
/// it holds): at nats-server's default of 1,000, a pull past it went unanswered until acks made
/// room, and one given up on could lose a redelivery on 2.9.10.
#[tokio::test]
async fn a_pull_is_answered_however_many_messages_are_unacknowledged() {
    let namespace = unique_namespace();
    let bus = bus(&namespace, &[]).await;
    bus.ensure_topology(&[WHOLE_STREAM])
        .await
        .expect("topology");
    let ns = Namespace::parse(&namespace).expect("namespace");
    for n in 0..1_100 {
        publish(&bus, ns.subject("engagement.page_view"), format!("{n}")).await;
    }
    let consumer = bus.consumer(&WHOLE_STREAM).await.expect("consumer");
    let held = fetch(&consumer, 1_000).await;
    assert_eq!(held.len(), 1_000);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(3), fetch(&consumer, 500))
        .await
        .expect("answered with 1,000 messages unacknowledged");
    assert_eq!(rest.len(), 100);
    bus.close().await;
    drop_namespace(&namespace).await;
}

/// A `nats-server` of the test's own, from a configuration file, killed when dropped.
struct ConfiguredServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl ConfiguredServer {
    fn start(config: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("leadflow-nats-{}", unique_namespace()));
        std::fs::create_dir_all(&dir).expect("server directory");
        let file = dir.join("nats.conf");
        std::fs::write(&file, config).expect("server configuration");
        // Debian installs it in /usr/sbin, which is not on every user's PATH.
        let binary = ["/usr/sbin/nats-server", "nats-server"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts (Debian package nats-server)");
        Self { child, dir }
    }
}

impl Drop for ConfiguredServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the test's tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Against a server that requires them, credentials written into `NATS_URL` (a list of two
/// servers here) authenticate: the
/// client library reads none from the URL, and until they were passed as options every
/// connection was refused as an authorization violation. They stay out of the log, even the
/// client library's debug lines. And a subscription the server's permissions refuse, reported by
/// nothing but the server's error event, is a warning naming the subject: a consume loop's
/// doorbell is such a subscription, and refused it never rings, leaving the loop to its slow poll.
#[tokio::test]
async fn credentials_in_the_url_authenticate_unlogged_and_a_refused_subscription_is_a_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let password = "s3cret-pass-for-this-test";
    let _server = ConfiguredServer::start(&format!(
        r#"listen: "127.0.0.1:{port}"
authorization {{
  users = [
    {{ user: "scorer", password: "{password}", permissions: {{ subscribe: {{ deny: ["*.engagement.>"] }} }} }}
  ]
}}
"#
    ));
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // The test's runtime has one thread, so the client's own tasks log here too.
    let _logging = tracing::subscriber::set_default(subscriber);

    let namespace = unique_namespace();
    let cfg = config(
        "postgres://postgres@127.0.0.1:5432/unused",
        // A list, as deployments give a cluster's servers: the client reads one string as one
        // URL, and a list given as one string did not parse.
        &format!("nats://scorer:{password}@127.0.0.1:{port}, 127.0.0.1:{port}"),
        &namespace,
        &[],
    );
    let bus = Bus::connect(&cfg.nats, "permissions-test")
        .await
        .expect("connect");
    leadflow_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the client to connect to the test's server",
        || async {
            (bus.client().connection_state() == async_nats::connection::State::Connected)
                .then_some(())
        },
    )
    .await;
    let _bell = bus
        .doorbell(&WHOLE_STREAM)
        .await
        .expect("the client takes the subscription; the server refuses it");
    let refused = leadflow_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the refusal in the log",
        || async {
            captured
                .text()
                .lines()
                // The service's own line, not the client library's.
                .find(|l| {
                    l.contains("leadflow_platform")
                        && l.to_lowercase().contains("permissions violation")
                })
                .map(str::to_owned)
        },
    )
    .await;
    assert!(refused.contains("WARN"), "{refused}");
    assert!(
        refused.contains(&format!("{namespace}.engagement.>")),
        "names the subject: {refused}"
    );
    let log = captured.text();
    assert!(
        log.contains("async_nats"),
        "the client library's own lines are captured too: {log}"
    );
    assert!(!log.contains(password), "no credentials in the log: {log}");
}
