//! Real-time fan-out. The process that writes a notification publishes it on the core NATS subject
//! `<ns>.notify.user.<user id>`; every notifier process subscribes to all of them and hands each to
//! its own open connections for that user. So a user's browser tabs may be on any process.
//!
//! Each connection has a small bounded queue. A connection that does not keep up is dropped (its
//! queue closed) rather than allowed to buffer without bound: the client reconnects with
//! `Last-Event-ID` and reads what it missed from the table.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use futures::StreamExt as _;
use leadflow_platform::Platform;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::metrics::NotifierMetrics;

const EVENT_TIME_HEADER: &str = "Leadflow-Event-Time";

/// One notification as clients receive it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The notification's `seq`: the SSE id, and what `Last-Event-ID` resumes after.
    pub seq: i64,
    /// `{id, seq, kind, payload, created_at}`.
    pub json: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    Ws,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

struct Conn {
    id: u64,
    transport: Transport,
    tx: mpsc::Sender<Frame>,
}

pub struct Hub {
    conns: RwLock<HashMap<Uuid, Vec<Conn>>>,
    next_id: AtomicU64,
    buffer: usize,
    /// Open connections one user may have on this process: a bound on what one account can hold.
    max_per_user: usize,
    metrics: NotifierMetrics,
}

/// A registered connection's receiving end; dropping it unregisters the connection.
pub struct Subscription {
    hub: Arc<Hub>,
    user: Uuid,
    id: u64,
    transport: Transport,
    pub rx: mpsc::Receiver<Frame>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.user, &[self.id]);
        self.hub
            .metrics
            .connections
            .with_label_values(&[self.transport.as_str()])
            .dec();
    }
}

impl Hub {
    pub fn new(buffer: usize, max_per_user: usize, metrics: NotifierMetrics) -> Arc<Self> {
        Arc::new(Self {
            conns: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
            max_per_user: max_per_user.max(1),
            metrics,
        })
    }

    /// Registers a connection for `user`; from now on it receives every push for them. `None`
    /// when the user already has as many connections here as allowed.
    pub fn subscribe(self: &Arc<Self>, user: Uuid, transport: Transport) -> Option<Subscription> {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = self.conns.write().unwrap_or_else(|e| e.into_inner());
            let list = conns.entry(user).or_default();
            if list.len() >= self.max_per_user {
                return None;
            }
            list.push(Conn { id, transport, tx });
        }
        self.metrics
            .connections
            .with_label_values(&[transport.as_str()])
            .inc();
        Some(Subscription {
            hub: self.clone(),
            user,
            id,
            transport,
            rx,
        })
    }

    fn remove(&self, user: Uuid, ids: &[u64]) {
        let mut conns = self.conns.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = conns.get_mut(&user) {
            list.retain(|c| !ids.contains(&c.id));
            if list.is_empty() {
                conns.remove(&user);
            }
        }
    }

    /// Hands `frame` to every local connection of `user`, dropping the ones whose queue is full.
    pub fn dispatch(&self, user: Uuid, frame: &Frame, event_time: Option<OffsetDateTime>) {
        let mut slow = Vec::new();
        {
            let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
            let Some(list) = conns.get(&user) else {
                return;
            };
            for conn in list {
                let channel = conn.transport.as_str();
                match conn.tx.try_send(frame.clone()) {
                    Ok(()) => {
                        self.metrics
                            .delivered
                            .with_label_values(&[channel, "pushed"])
                            .inc();
                        if let Some(at) = event_time {
                            let latency = (OffsetDateTime::now_utc() - at).as_seconds_f64();
                            self.metrics.push_latency.observe(latency.max(0.0));
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.metrics
                            .delivered
                            .with_label_values(&[channel, "dropped_slow_client"])
                            .inc();
                        slow.push(conn.id);
                    }
                    // The connection is going away; its Subscription's drop removes it.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        if !slow.is_empty() {
            tracing::info!(user = %user, dropped = slow.len(), "dropping streams that fell behind");
            self.remove(user, &slow);
        }
    }

    /// Open connections on this process.
    pub fn len(&self) -> usize {
        self.conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn user_subject(platform: &Platform, user: Uuid) -> String {
    platform
        .bus
        .namespace()
        .subject(&format!("notify.user.{user}"))
}

/// Publishes a new notification to every notifier process (core NATS: at most once; a process
/// that misses it serves it from the table on the client's next resume).
pub async fn publish(
    platform: &Platform,
    user: Uuid,
    json: String,
    event_time: OffsetDateTime,
) -> Result<(), async_nats::PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    let nanos = event_time.unix_timestamp_nanos().to_string();
    headers.insert(EVENT_TIME_HEADER, nanos.as_str());
    platform
        .bus
        .client()
        .publish_with_headers(user_subject(platform, user), headers, Bytes::from(json))
        .await
}

/// Receives every process's pushes and dispatches them to this process's connections, until
/// shutdown. async-nats re-subscribes by itself after a reconnect.
pub async fn run(platform: Arc<Platform>, hub: Arc<Hub>) {
    let token = platform.shutdown_token();
    let wildcard = platform.bus.namespace().subject("notify.user.*");
    let mut delays = leadflow_platform::retry::backoff();
    loop {
        let mut subscriber = match platform.bus.client().subscribe(wildcard.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "subscribing to notification pushes failed; retrying");
                let delay = delays.next().unwrap_or(std::time::Duration::from_secs(1));
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        loop {
            let message = tokio::select! {
                () = token.cancelled() => return,
                message = subscriber.next() => message,
            };
            let Some(message) = message else { break };
            let Some(user) = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .and_then(|u| Uuid::parse_str(u).ok())
            else {
                continue;
            };
            let Some(frame) = frame_of(&message.payload) else {
                continue;
            };
            let event_time = message
                .headers
                .as_ref()
                .and_then(|h| h.get(EVENT_TIME_HEADER))
                .and_then(|v| v.as_str().parse::<i128>().ok())
                .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok());
            hub.dispatch(user, &frame, event_time);
        }
    }
}

fn frame_of(payload: &[u8]) -> Option<Frame> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: i64,
    }
    let seq: Seq = serde_json::from_slice(payload).ok()?;
    let json = std::str::from_utf8(payload).ok()?;
    Some(Frame {
        seq: seq.seq,
        json: Arc::from(json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(buffer: usize) -> Arc<Hub> {
        let metrics = NotifierMetrics::register(&prometheus::Registry::new()).expect("metrics");
        Hub::new(buffer, 3, metrics)
    }

    fn frame(seq: i64) -> Frame {
        Frame {
            seq,
            json: Arc::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    #[tokio::test]
    async fn pushes_reach_only_the_users_own_connections() {
        let hub = hub(8);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut a1 = hub.subscribe(alice, Transport::Sse).expect("room");
        let mut a2 = hub.subscribe(alice, Transport::Ws).expect("room");
        let mut b = hub.subscribe(bob, Transport::Sse).expect("room");
        hub.dispatch(alice, &frame(1), None);
        assert_eq!(a1.rx.recv().await.map(|f| f.seq), Some(1));
        assert_eq!(a2.rx.recv().await.map(|f| f.seq), Some(1));
        assert!(b.rx.try_recv().is_err());
        assert_eq!(hub.len(), 3);
        drop(a1);
        assert_eq!(hub.len(), 2, "a closed connection unregisters itself");
    }

    #[test]
    fn one_user_cannot_hold_more_than_their_share_of_connections() {
        let hub = hub(8);
        let user = Uuid::new_v4();
        let held: Vec<_> = (0..3)
            .map(|_| hub.subscribe(user, Transport::Sse).expect("room"))
            .collect();
        assert!(hub.subscribe(user, Transport::Ws).is_none());
        assert!(
            hub.subscribe(Uuid::new_v4(), Transport::Ws).is_some(),
            "others are not affected"
        );
        drop(held);
        assert!(hub.subscribe(user, Transport::Ws).is_some());
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_dropped_not_buffered() {
        let hub = hub(2);
        let user = Uuid::new_v4();
        let mut slow = hub.subscribe(user, Transport::Sse).expect("room");
        for seq in 1..=5 {
            hub.dispatch(user, &frame(seq), None);
        }
        assert_eq!(hub.len(), 0, "dropped once its queue was full");
        // What was queued is still delivered, then the stream ends (the client resumes later).
        assert_eq!(slow.rx.recv().await.map(|f| f.seq), Some(1));
        assert_eq!(slow.rx.recv().await.map(|f| f.seq), Some(2));
        assert!(slow.rx.recv().await.is_none());
    }

    #[test]
    fn frames_carry_their_seq() {
        let f = frame_of(br#"{"id":"x","seq":42,"kind":"k"}"#).expect("frame");
        assert_eq!(f.seq, 42);
        assert!(frame_of(b"not json").is_none());
    }
}
