//! The consume loop's lanes against the real NATS: lanes commit at once, a key's items in order and
//! in one lane at a time, and what waits for a busy lane is kept alive on the server however long
//! that lane is held.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::Message;
use futures::StreamExt as _;
use leadflow_events::{Namespace, Stream};
use leadflow_platform::{
    Platform,
    bus::ConsumerSpec,
    consume::{self, Handler},
};
use leadflow_testkit::{TestDb, drop_namespace, eventually, nats_url, unique_namespace};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{config, consumers::fetch};

const SPEC: ConsumerSpec = ConsumerSpec {
    name: "lanes_engagement",
    stream: Stream::Engagement,
    filter: "engagement.>",
};

/// Items are `key:seq`. A part with a key in `hold` fails as if the database were down.
#[derive(Default)]
struct Recorder {
    hold: Mutex<std::collections::HashSet<u64>>,
    /// Panic (once) when handed item `0:0`.
    panic_once: std::sync::atomic::AtomicBool,
    /// Every attempt to process a held key.
    held_attempts: Mutex<usize>,
    /// The items of those attempts.
    held_items: Mutex<Vec<(u64, u64)>>,
    /// What was committed: (key, seq, delivery count).
    committed: Mutex<Vec<(u64, u64, i64)>>,
    /// An item whose every part fails, as a bad event's would, after `takes`.
    poison: Mutex<Option<(u64, u64)>>,
    /// How long a part takes to commit.
    takes: Mutex<Duration>,
    /// The seqs of every part handed to `process`, failed or not.
    parts: Mutex<Vec<Vec<u64>>>,
}

impl Handler for Recorder {
    type Item = (u64, u64, i64);
    type Done = Vec<(u64, u64, i64)>;

    fn parse(&self, message: &Message) -> Result<Self::Item, String> {
        let text = std::str::from_utf8(&message.payload).map_err(|e| e.to_string())?;
        let (key, seq) = text.split_once(':').ok_or("no colon")?;
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        Ok((
            key.parse().map_err(|_| "key")?,
            seq.parse().map_err(|_| "seq")?,
            delivered,
        ))
    }

    fn key(&self, item: &Self::Item) -> u64 {
        item.0
    }

    async fn process(&self, _consumer: &str, items: &[Self::Item]) -> sqlx::Result<Self::Done> {
        self.parts
            .lock()
            .expect("lock")
            .push(items.iter().map(|(_, seq, _)| *seq).collect());
        if items.iter().any(|(key, seq, _)| (*key, *seq) == (0, 0))
            && self
                .panic_once
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("a bug in the handler");
        }
        let takes = *self.takes.lock().expect("lock");
        tokio::time::sleep(takes).await;
        let poison = *self.poison.lock().expect("lock");
        if items
            .iter()
            .any(|(key, seq, _)| Some((*key, *seq)) == poison)
        {
            return Err(sqlx::Error::Decode("a bad event".into()));
        }
        let hold = self.hold.lock().expect("lock").clone();
        if items.iter().any(|(key, _, _)| hold.contains(key)) {
            *self.held_attempts.lock().expect("lock") += 1;
            self.held_items
                .lock()
                .expect("lock")
                .extend(items.iter().map(|(key, seq, _)| (*key, *seq)));
            return Err(sqlx::Error::PoolTimedOut);
        }
        Ok(items.to_vec())
    }

    async fn committed(&self, done: Self::Done) {
        self.committed.lock().expect("lock").extend(done);
    }
}

impl Recorder {
    /// Waits until the outage has held a part with key 0.
    async fn holding(&self) {
        eventually(Duration::from_secs(10), "key 0 held", || async {
            (*self.held_attempts.lock().expect("lock") > 0).then_some(())
        })
        .await;
    }

    /// Ends the outage, waits for `n` commits in all, and checks that key 0's are `seqs`, in
    /// that order, and that every message committed was on its first delivery.
    async fn release_and_expect(&self, n: usize, seqs: &[u64]) {
        self.hold.lock().expect("lock").clear();
        self.committed_reaches(n, "key 0's parts").await;
        let committed = self.committed.lock().expect("lock").clone();
        let key0: Vec<u64> = committed
            .iter()
            .filter(|(key, _, _)| *key == 0)
            .map(|(_, seq, _)| *seq)
            .collect();
        assert_eq!(key0, seqs, "key 0 in order: {committed:?}");
        assert!(
            committed.iter().all(|(_, _, delivered)| *delivered == 1),
            "{committed:?}"
        );
    }

    /// Waits until `seqs` (of key 0) have committed, then long enough for any copy the server
    /// handed out again to commit too (it would wait for the lane holding key 0), and checks that
    /// each committed once, in order, on its first delivery.
    async fn each_once_on_first_delivery(
        &self,
        seqs: impl Iterator<Item = u64> + Clone,
        linger: Duration,
    ) {
        let n = seqs.clone().count();
        eventually(Duration::from_secs(15), "the events to commit", || async {
            (self.committed.lock().expect("lock").len() >= n).then_some(())
        })
        .await;
        tokio::time::sleep(linger).await;
        let committed = self.committed.lock().expect("lock").clone();
        assert_eq!(
            committed.iter().map(|(_, seq, _)| *seq).collect::<Vec<_>>(),
            seqs.collect::<Vec<_>>(),
            "each event once, in order: {committed:?}"
        );
        assert!(
            committed.iter().all(|(_, _, delivered)| *delivered == 1),
            "{committed:?}"
        );
    }

    async fn committed_reaches(&self, n: usize, what: &str) {
        eventually(Duration::from_secs(10), what, || async {
            (self.committed.lock().expect("lock").len() == n).then_some(())
        })
        .await;
    }
}

/// The stage's ack wait.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for a copy the server would hand out again: an ack wait, a quiet loop's poll
/// and a margin.
const LINGER: Duration = ACK_WAIT
    .saturating_add(consume::QUIET_POLL)
    .saturating_add(Duration::from_millis(500));

/// A platform on its own database and namespace, with a short ack wait (1 s) so that what is held
/// outlasts it several times over, and the durable set up.
struct Stage {
    _db: TestDb,
    namespace: String,
    ns: Namespace,
    token: CancellationToken,
    platform: Arc<Platform>,
}

impl Stage {
    async fn start() -> Stage {
        let db = TestDb::empty().await;
        let namespace = unique_namespace();
        let ns = Namespace::parse(&namespace).expect("namespace");
        let cfg = config(&db.url, &nats_url(), &namespace, &["--nats-ack-wait", "1s"]);
        assert_eq!(cfg.nats.nats_ack_wait, ACK_WAIT);
        let token = CancellationToken::new();
        let platform = Platform::start("test", &cfg, vec![SPEC], token.clone())
            .await
            .expect("platform");
        eventually(Duration::from_secs(10), "the durable", || async {
            platform.bus.consumer(&SPEC).await.ok()
        })
        .await;
        Stage {
            _db: db,
            namespace,
            ns,
            token,
            platform,
        }
    }

    async fn publish(&self, key: u64, seq: u64) {
        self.platform
            .bus
            .jetstream()
            .publish(
                self.ns.subject("engagement.page_view"),
                format!("{key}:{seq}").into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// The consume loop over `lanes` lanes, in batches of 10.
    fn consume(&self, lanes: usize, recorder: &Arc<Recorder>) -> JoinHandle<()> {
        self.consume_in_batches(lanes, 10, recorder)
    }

    fn consume_in_batches(
        &self,
        lanes: usize,
        batch: usize,
        recorder: &Arc<Recorder>,
    ) -> JoinHandle<()> {
        tokio::spawn(consume::run(
            self.platform.clone(),
            SPEC,
            batch,
            lanes,
            recorder.clone(),
        ))
    }

    /// A two-lane loop whose lane with item `0:0` is held by the outage.
    async fn hold_key_0(&self, recorder: &Arc<Recorder>) -> JoinHandle<()> {
        recorder.hold.lock().expect("lock").insert(0);
        self.publish(0, 0).await;
        let running = self.consume(2, recorder);
        recorder.holding().await;
        running
    }

    /// Key 0's items `0:0` to `0:{events - 1}` in the stream (10 at most), then a two-lane loop
    /// whose parts each take `takes`; with `poison`, every part with `0:0` fails as a bad event's
    /// would. One key, so one fetch gives them all to one lane, and the other lane is free to fetch
    /// anything the server hands out again.
    async fn slow_key_0(
        &self,
        recorder: &Arc<Recorder>,
        events: u64,
        takes: Duration,
        poison: bool,
    ) -> JoinHandle<()> {
        *recorder.takes.lock().expect("lock") = takes;
        *recorder.poison.lock().expect("lock") = poison.then_some((0, 0));
        for seq in 0..events {
            self.publish(0, seq).await;
        }
        self.consume(2, recorder)
    }

    /// Shuts the loop down; it must end within 5 s without a panic.
    async fn halt(&self, running: JoinHandle<()>) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the loop ends at shutdown")
            .expect("no panic escapes");
    }

    /// After [`Stage::halt`]: what the server hands another reader now (up to 10 messages, as
    /// `key:seq`, in order), the stage's namespace removed.
    async fn handed_back(self) -> Vec<String> {
        let observer = self.platform.bus.consumer(&SPEC).await.expect("consumer");
        let back = fetch(&observer, 10)
            .await
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        self.platform.close().await;
        drop_namespace(&self.namespace).await;
        back
    }

    /// Shuts down and removes what the stage made.
    async fn stop(self, running: JoinHandle<()>) {
        self.halt(running).await;
        self.platform.close().await;
        drop_namespace(&self.namespace).await;
    }
}

#[tokio::test]
async fn lanes_commit_in_order_and_what_waits_out_an_outage_is_not_redelivered() {
    let stage = Stage::start().await;
    // Key 0's part is in the stream before the loop starts, so one fetch takes all of it, and
    // the outage holds it.
    for seq in 0..5 {
        stage.publish(0, seq).await;
    }
    let recorder = Arc::new(Recorder::default());
    recorder.hold.lock().expect("lock").insert(0);
    let running = stage.consume(2, &recorder);
    recorder.holding().await;
    // Key 1's part commits in the other lane.
    for seq in 0..5 {
        stage.publish(1, seq).await;
    }
    recorder.committed_reaches(5, "key 1's first part").await;
    // The second batch: the free lane takes key 1's items at once; key 0's (published last, so
    // every message is fetched by then) waits for the lane that holds key 0.
    for seq in 5..10 {
        stage.publish(1, seq).await;
    }
    stage.publish(0, 5).await;
    recorder.committed_reaches(10, "key 1's second part").await;
    assert!(
        recorder
            .committed
            .lock()
            .expect("lock")
            .iter()
            .all(|(key, _, _)| *key == 1),
        "key 0 is held; key 1 went on without it"
    );

    // Three ack waits later, the server still counts every held message as in progress: another
    // reader of the durable gets none of them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let observer = stage.platform.bus.consumer(&SPEC).await.expect("consumer");
    let redelivered = fetch(&observer, 10).await;
    assert!(
        redelivered.is_empty(),
        "held messages were redelivered: {:?}",
        redelivered
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(*recorder.held_attempts.lock().expect("lock") >= 2);

    // The database is back: key 0's two parts commit, in order, each message once and on its
    // first delivery.
    recorder
        .release_and_expect(16, &(0..6).collect::<Vec<_>>())
        .await;

    stage.stop(running).await;
}

/// A part whose transaction outlasts the ack wait is kept in progress while it runs: the server
/// hands none of its events to another reader, so each commits once, on its first delivery.
#[tokio::test]
async fn a_part_slower_than_the_ack_wait_is_not_redelivered_while_it_runs() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let running = stage
        .slow_key_0(&recorder, 5, Duration::from_millis(2500), false)
        .await;
    recorder
        .each_once_on_first_delivery(0..5, Duration::from_millis(3500))
        .await;
    stage.stop(running).await;
}

/// A batch with a bad event is retried in halves, each halved again while it fails: the bad event
/// fails alone, every good one commits once, in order, on its first delivery, and it takes a
/// handful of transactions, not one an event.
#[tokio::test]
async fn a_bad_event_fails_alone_within_a_few_transactions() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    *recorder.poison.lock().expect("lock") = Some((0, 37));
    for seq in 0..64 {
        stage.publish(0, seq).await;
    }
    let running = stage.consume_in_batches(2, 64, &recorder);
    recorder
        .each_once_on_first_delivery((0..64).filter(|seq| *seq != 37), Duration::ZERO)
        .await;

    // The metric first: a redelivery of `0:37` is recorded in `parts` before it is counted.
    let name = stage.platform.bus.namespace().name(SPEC.name);
    let failed = stage
        .platform
        .metrics
        .events_failed
        .with_label_values(&[name.as_str()])
        .get();
    let parts = recorder.parts.lock().expect("lock").clone();
    // One fetch of all 64 takes 12: the whole, then two halves at each of six halvings, less `0:37`
    // alone. Event by event it was 64.
    let with_good_events = parts.iter().filter(|part| *part != &[37]).count();
    assert!(
        with_good_events <= 16,
        "a few transactions for log2(64) halvings, not one an event: {parts:?}"
    );
    let alone = parts.iter().filter(|part| *part == &[37]).count();
    assert!(alone >= 1, "the bad event was tried alone: {parts:?}");
    assert!(
        (1..=alone as u64).contains(&failed),
        "only the bad event counts as failed ({failed}), once a try alone ({alone})"
    );
    stage.stop(running).await;
}

/// A failed batch is retried in halves, and however long that takes, even one event longer than
/// the ack wait, the half still to come is kept in progress: none of its events is handed out
/// again meanwhile, so each commits once, on its first delivery.
#[tokio::test]
async fn a_batch_retried_in_halves_is_not_redelivered_meanwhile() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    // `0:1` alone outlasts the 1 s ack wait, while `0:2` to `0:4` wait their turn.
    let running = stage
        .slow_key_0(&recorder, 5, Duration::from_millis(1500), true)
        .await;
    recorder
        .each_once_on_first_delivery(1..5, Duration::from_millis(2000))
        .await;
    stage.stop(running).await;
}

/// Halvings quicker than a progress interval each (a third of the ack wait) still keep the
/// events in progress: `0:1` is in a failing part four times in a row, 1.2 s, before it commits
/// alone, and must not be handed out again meanwhile (1 s ack wait).
#[tokio::test]
async fn quick_halvings_keep_the_events_in_progress() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let running = stage
        .slow_key_0(&recorder, 8, Duration::from_millis(300), true)
        .await;
    // A copy handed out again after the ack wait is taken at a quiet loop's next poll at the latest.
    recorder.each_once_on_first_delivery(1..8, LINGER).await;
    stage.stop(running).await;
}

/// A lane that is free takes any key but the ones a busy lane holds: key 2 would have shared a
/// lane with key 0 had keys been tied to lanes (2 modulo 2 lanes), and it must not wait out key
/// 0's outage. Key 0's next item waits for key 0's part, and follows it in order.
#[tokio::test]
async fn a_free_lane_takes_every_key_but_those_a_busy_lane_holds() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let running = stage.hold_key_0(&recorder).await;
    stage.publish(0, 1).await;
    for seq in 0..5 {
        stage.publish(2, seq).await;
    }
    recorder
        .committed_reaches(5, "key 2, while key 0 is held")
        .await;
    assert!(
        recorder
            .held_items
            .lock()
            .expect("lock")
            .iter()
            .all(|item| *item == (0, 0)),
        "key 0's next item waits for the lane that holds key 0, not tried in another"
    );
    recorder.release_and_expect(7, &[0, 1]).await;
    stage.stop(running).await;
}

/// Two lanes take work whenever idle; a third only once half a batch waits (the loop's batch
/// here is 10).
#[tokio::test]
async fn a_lane_beyond_two_takes_work_only_once_a_backlog_waits() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    recorder.hold.lock().expect("lock").extend([0, 1]);
    stage.publish(0, 0).await;
    stage.publish(1, 0).await;
    let running = stage.consume(3, &recorder);
    eventually(Duration::from_secs(10), "keys 0 and 1 held", || async {
        let held = recorder.held_items.lock().expect("lock").clone();
        (held.contains(&(0, 0)) && held.contains(&(1, 0))).then_some(())
    })
    .await;

    // Both steady lanes are held; four items are no backlog, and the third lane leaves them.
    for seq in 0..4 {
        stage.publish(2, seq).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        recorder.committed.lock().expect("lock").is_empty(),
        "the third lane took a trickle"
    );
    // The fifth makes half a batch: the third lane takes all five.
    stage.publish(2, 4).await;
    recorder
        .committed_reaches(5, "key 2 in the third lane")
        .await;
    let committed: Vec<(u64, u64)> = recorder
        .committed
        .lock()
        .expect("lock")
        .iter()
        .map(|(key, seq, _)| (*key, *seq))
        .collect();
    assert_eq!(committed, (0..5).map(|seq| (2, seq)).collect::<Vec<_>>());

    recorder.hold.lock().expect("lock").clear();
    recorder.committed_reaches(7, "the held keys").await;
    stage.stop(running).await;
}

/// At shutdown a part held by an outage goes back to JetStream, and what waited for its key
/// follows it, in order and at once: another instance takes key 0's items in delivery order
/// without waiting out an ack wait.
#[tokio::test]
async fn at_shutdown_a_held_part_and_what_waits_for_its_key_go_back_in_order() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let running = stage.hold_key_0(&recorder).await;
    stage.publish(0, 1).await;
    eventually(
        Duration::from_secs(10),
        "key 0's next item fetched",
        || async {
            let mut consumer = stage.platform.bus.consumer(&SPEC).await.ok()?;
            (consumer.info().await.ok()?.num_ack_pending == 2).then_some(())
        },
    )
    .await;
    stage.halt(running).await;

    assert!(recorder.committed.lock().expect("lock").is_empty());
    let back = stage.handed_back().await;
    assert_eq!(back, ["0:0", "0:1"], "handed back at once, in order");
}

/// Shutting down while a batch is retried in halves, the half in hand finishes and the halves
/// still to come go back at once, in order, rather than being worked through first.
#[tokio::test]
async fn at_shutdown_a_retry_in_halves_hands_back_the_rest_in_order() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    // Halves of 0-3 and 4-7; 0-3 fails too, and its halves 0-1 (halved again: 0 fails alone, 1
    // commits) and 2-3 come next. Shutdown comes when 1 has committed, while 2-3 runs. Every
    // attempt, failed or not, takes 1.5 s.
    let running = stage
        .slow_key_0(&recorder, 8, Duration::from_millis(1500), true)
        .await;
    eventually(Duration::from_secs(20), "the first good event", || async {
        (!recorder.committed.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    stage.halt(running).await;

    let committed: Vec<u64> = recorder
        .committed
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, seq, _)| *seq)
        .collect();
    assert_eq!(committed, [1, 2, 3], "the half in hand finished, no more");
    let mut back = stage.handed_back().await;
    back.retain(|m| m != "0:0");
    assert_eq!(
        back,
        ["0:4", "0:5", "0:6", "0:7"],
        "handed back at once, in order"
    );
}

/// A batch that fails once shutdown has begun is not split into new transactions: it goes back
/// whole, in order.
#[tokio::test]
async fn at_shutdown_a_failed_batch_goes_back_whole() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let running = stage
        .slow_key_0(&recorder, 5, Duration::from_millis(1500), true)
        .await;
    eventually(Duration::from_secs(10), "the first attempt", || async {
        (!recorder.parts.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    stage.halt(running).await;

    let parts = recorder.parts.lock().expect("lock").clone();
    assert_eq!(parts, [vec![0, 1, 2, 3, 4]], "no half was tried");
    assert!(recorder.committed.lock().expect("lock").is_empty());
    let back = stage.handed_back().await;
    assert_eq!(
        back,
        ["0:0", "0:1", "0:2", "0:3", "0:4"],
        "handed back whole, in order"
    );
}

/// A handler that panics must not leave its lane busy for good: the lane goes on with the next
/// part, and the events of the part that panicked come back after their ack wait.
#[tokio::test]
async fn a_lane_whose_handler_panics_goes_on_and_the_events_come_back() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    recorder
        .panic_once
        .store(true, std::sync::atomic::Ordering::SeqCst);
    stage.publish(0, 0).await;
    let running = stage.consume(1, &recorder);
    eventually(Duration::from_secs(10), "the panic", || async {
        (!recorder
            .panic_once
            .load(std::sync::atomic::Ordering::SeqCst))
        .then_some(())
    })
    .await;
    stage.publish(0, 1).await;
    recorder.committed_reaches(2, "both events").await;
    let committed = recorder.committed.lock().expect("lock").clone();
    assert!(
        committed.contains(&(0, 1, 1)),
        "the next event, on its first delivery: {committed:?}"
    );
    assert!(
        committed
            .iter()
            .any(|(key, seq, delivered)| (*key, *seq) == (0, 0) && *delivered == 2),
        "the event whose batch panicked, redelivered: {committed:?}"
    );

    stage.stop(running).await;
}

/// A loop whose stream has gone quiet pulls an event as it is published, not at its next poll:
/// each event below is published just after a quiet poll, and committed long before the next one.
#[tokio::test]
async fn a_quiet_loop_takes_an_event_when_it_is_published_not_at_its_next_poll() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let client = stage.platform.bus.client();
    // Every pull is a request on this subject, so the test sees when the loop pulls.
    let mut pulls = client
        .subscribe(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            stage.ns.stream_name(SPEC.stream),
            stage.ns.name(SPEC.name)
        ))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let running = stage.consume(1, &recorder);
    for seq in 0..2 {
        // A pull after a long gap is a quiet loop's poll; the next one is `QUIET_POLL` away.
        let mut last = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), async {
            while pulls.next().await.is_some() {
                if last.elapsed() >= consume::QUIET_POLL / 2 {
                    break;
                }
                last = tokio::time::Instant::now();
            }
        })
        .await
        .expect("the loop goes quiet and polls");
        stage.publish(0, seq).await;
        let published = tokio::time::Instant::now();
        by(
            published + consume::QUIET_POLL / 2,
            "committed before the next poll",
            || recorder.committed.lock().expect("lock").len() > seq as usize,
        )
        .await;
    }
    stage.stop(running).await;
}

/// A failed event is given back for another try a second later, which publishes nothing: the loop
/// pulls it when it falls due, not at its next quiet poll.
#[tokio::test]
async fn a_failed_event_is_pulled_again_when_it_falls_due_not_at_the_next_poll() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    *recorder.poison.lock().expect("lock") = Some((0, 0));
    stage.publish(0, 0).await;
    let running = stage.consume(1, &recorder);
    let attempts = || {
        recorder
            .parts
            .lock()
            .expect("lock")
            .iter()
            .filter(|part| part.as_slice() == [0])
            .count()
    };
    eventually(Duration::from_secs(10), "the first attempt", || async {
        (attempts() == 1).then_some(())
    })
    .await;
    let failed = tokio::time::Instant::now();
    // Another event rings the doorbell 0.6 s later; once it is committed the loop goes quiet
    // again, and its next poll falls about a second after that, well past the failed event's due
    // time (1 s after it failed).
    tokio::time::sleep_until(failed + Duration::from_millis(600)).await;
    stage.publish(1, 1).await;
    recorder
        .committed_reaches(1, "the event that rings the doorbell")
        .await;
    by(
        failed + Duration::from_millis(1500),
        "tried again within half a second of falling due",
        || attempts() >= 2,
    )
    .await;
    stage.stop(running).await;
}

/// Waits until `done`, checking every 5 ms, and fails with `what` if `deadline` comes first.
async fn by(deadline: tokio::time::Instant, what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout_at(deadline, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect(what);
}

/// An idle loop keeps no pull waiting on the server. nats-server 2.9.10 lost a nacked message
/// whose delay ran out as a waiting pull expired, and left that pull unanswered; a pull that is
/// answered at once never expires. Events that come after a pause are still taken.
#[tokio::test]
async fn an_idle_loop_leaves_no_pull_waiting_on_the_server_and_still_takes_what_comes() {
    let stage = Stage::start().await;
    let recorder = Arc::new(Recorder::default());
    let running = stage.consume(1, &recorder);
    let mut consumer = stage.platform.bus.consumer(&SPEC).await.expect("durable");
    for _ in 0..30 {
        let info = consumer.info().await.expect("info");
        assert_eq!(info.num_waiting, 0, "no pull waits on the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stage.publish(1, 0).await;
    recorder
        .committed_reaches(1, "the event after the pause")
        .await;
    stage.stop(running).await;
}
