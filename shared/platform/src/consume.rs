//! The loop every durable consumer runs, whatever it does with the events: pull a batch, commit it
//! in one transaction, ack it after the commit. What goes wrong is sorted by what it says about
//! the events:
//! - a message that cannot be read is kept on `deadletter.<subject>` at once;
//! - PostgreSQL unreachable, or a lost deadlock, says nothing about the events: the batch is held,
//!   JetStream is told it is in progress (so no delivery attempt is spent), and it is retried until
//!   the database is back. An outage must not push healthy events towards the dead-letter subject;
//! - any other failure of a batch is retried in halves, each halved again while it fails, so one
//!   bad event fails alone; it is redelivered, and dead-lettered after `NATS_MAX_DELIVER` attempts.
//!
//! A batch is processed by lanes that commit at once. Items carry a key ([`Handler::key`]): items
//! with one key are processed in the order they were delivered and never in two lanes at once;
//! any other item goes to whichever free lane may take it. The first two lanes take work whenever
//! they are free; lanes beyond them only while half a batch or more waits, which the loop learns by
//! pulling for them, at most every [`BACKLOG_POLL`] while the first two are busy. A lane that
//! finishes does not wait for the others: it takes what waits (but a busy lane's keys), and the
//! loop fetches for it as soon as it has nothing to do. While every lane is busy nothing is
//! fetched, so events gather in the stream and batches grow with the load. What waits, and what a
//! lane is processing, is reported in progress to JetStream, so its ack wait never runs out however
//! long a busy lane's batch takes (a database outage, a slow transaction).

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    future::Future,
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt as _;
use std::panic::AssertUnwindSafe;

use futures::{FutureExt as _, future::OptionFuture};
use leadflow_events::subjects;
use tokio::{
    sync::mpsc,
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use crate::{Platform, bus::ConsumerSpec, db};

/// What a consumer does with its events.
pub trait Handler: Send + Sync + 'static {
    /// A message read and understood.
    type Item: Send + Sync + 'static;
    /// What a committed batch leaves for [`Handler::committed`].
    type Done: Send;

    /// Reads a message; an error (why) sends it to the dead-letter subject.
    fn parse(&self, message: &Message) -> Result<Self::Item, String>;

    /// Items with the same key are processed in the order they were delivered, one lane at a time;
    /// items with different keys may commit at once in different lanes. Items whose order matters,
    /// or whose transactions would wait for each other, must share a key.
    fn key(&self, _item: &Self::Item) -> u64 {
        0
    }

    /// Writes everything the items change in one transaction.
    fn process(
        &self,
        consumer: &str,
        items: &[Self::Item],
    ) -> impl Future<Output = sqlx::Result<Self::Done>> + Send;

    /// Runs after the commit, before the batch is acked (pushes, metrics).
    fn committed(&self, done: Self::Done) -> impl Future<Output = ()> + Send;
}

/// The durable's settings as the server reported them when the loop looked it up, not this
/// instance's: during a rollout that changes them, another instance may have set them last.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// How long the server waits for an ack before redelivering.
    ack_wait: Duration,
    /// Deliveries the server makes of one message (0 or less: no limit).
    max_deliver: i64,
}

impl Settings {
    fn of(consumer: &PullConsumer) -> Settings {
        let config = &consumer.cached_info().config;
        Settings {
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
        }
    }

    /// How often JetStream must hear that a held message is still in progress: well within its
    /// ack wait.
    fn progress_every(&self) -> Duration {
        (self.ack_wait / 3).max(Duration::from_millis(100))
    }
}

/// What a lane is given to process in one transaction.
struct Part<I> {
    items: Vec<I>,
    messages: Vec<Message>,
    settings: Settings,
}

/// A fetched item waiting for a lane, and when JetStream last heard of it.
struct Queued<I> {
    key: u64,
    item: I,
    message: Message,
    settings: Settings,
    since: Instant,
}

impl<I> Queued<I> {
    /// When JetStream must next hear that the item is in progress: well before its ack wait ends.
    fn progress_due(&self) -> Instant {
        self.since + self.settings.progress_every()
    }
}

/// Consumes `spec` in batches of up to `batch` messages, over `lanes` lanes, until shutdown. The
/// parts in hand are finished and acked first; what still waits for a lane is handed back to
/// JetStream for another instance.
pub async fn run<H: Handler>(
    platform: Arc<Platform>,
    spec: ConsumerSpec,
    batch: usize,
    lanes: usize,
    handler: Arc<H>,
) {
    let token = platform.shutdown_token();
    let name: Arc<str> = platform.bus.namespace().name(spec.name).into();
    let lanes = lanes.max(1);
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<usize>();
    // When events given back for a later try fall due (nothing rings the doorbell for them).
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Instant>();
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for lane in 0..lanes {
        // A part is sent only to an idle lane, so one place is enough.
        let (sender, mut parts) = mpsc::channel::<Part<H::Item>>(1);
        senders.push(sender);
        let (platform, handler, name, idle, due) = (
            platform.clone(),
            handler.clone(),
            name.clone(),
            idle_tx.clone(),
            due_tx.clone(),
        );
        workers.spawn(async move {
            while let Some(part) = parts.recv().await {
                let batches = Batches {
                    platform: &platform,
                    handler: &*handler,
                    consumer: &name,
                    settings: part.settings,
                    redeliveries: &due,
                };
                let processed = batches.process(part.items, part.messages);
                // A panic must not leave the lane busy for good: the loop would keep what waits
                // for it in progress, away from every other instance, and stop fetching. The
                // part's messages, never acked, come back after their ack wait.
                if AssertUnwindSafe(processed).catch_unwind().await.is_err() {
                    tracing::error!(consumer = %name, lane, "processing a batch panicked; its events will be redelivered");
                }
                let _ = idle.send(lane);
            }
        });
    }
    let mut lanes = Lanes {
        in_flight: vec![None; senders.len()],
        senders,
        waiting: VecDeque::new(),
        batch,
    };

    let mut delays = crate::retry::backoff();
    let mut consumer: Option<PullConsumer> = None;
    // The fetch runs as a task of its own, so that lanes going idle are served while it waits.
    let mut fetching: Option<JoinHandle<Fetched>> = None;
    let mut pulls = Pulls::new();
    // While only lanes beyond the steady ones are idle, pulls only look for a backlog: at most
    // one per `BACKLOG_POLL`, not one after every pull that brought something.
    let mut backlog_poll = Instant::now();
    // When a pull last brought events.
    let mut last_events = Instant::now();
    // Set while the stream is quiet: rings with the next event published, so the loop pulls at
    // once instead of at its next poll.
    let mut doorbell: Option<async_nats::Subscriber> = None;
    loop {
        // Fetch only for a lane with nothing to do, and only while less than a batch waits: while
        // every lane is busy, events gather in the stream and the next fetch takes them together,
        // so batches grow with the load.
        let earliest = if lanes.steady_idle() {
            pulls.next
        } else {
            pulls.next.max(backlog_poll)
        };
        if fetching.is_none() && Instant::now() >= earliest && lanes.wants_more() {
            if consumer.is_none() {
                match platform.bus.consumer(&spec).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        tracing::debug!(consumer = %name, error = %e, "consumer not ready");
                        pulls.back_off(delays.next().unwrap_or(Duration::from_secs(1)));
                    }
                }
            }
            if let Some(current) = &consumer {
                // What waits never grows past a batch.
                let room = batch - lanes.waiting.len();
                pulls.sent(Instant::now());
                fetching = Some(tokio::spawn(fetch(current.clone(), room, name.clone())));
            }
        }
        // Wake for a waiting item's progress, or for the next pull after an empty one or a
        // failed one. A deadline already past wakes at once: checking it against the clock again here could
        // miss it, and the loop would then never fetch again.
        let retry = (fetching.is_none() && lanes.wants_more()).then_some(earliest);
        let wake = lanes.next_progress().into_iter().chain(retry).min();
        tokio::select! {
            () = token.cancelled() => break,
            Some(lane) = idle_rx.recv() => {
                lanes.in_flight[lane] = None;
                lanes.release_finished(&mut idle_rx);
                lanes.dispatch().await;
            }
            Some(joined) = OptionFuture::from(fetching.as_mut()), if fetching.is_some() => {
                fetching = None;
                backlog_poll = Instant::now() + BACKLOG_POLL;
                match joined {
                    Ok(Fetched { consumer: current, asked, result: Ok(messages) }) => {
                        if messages.is_empty() {
                            let quiet = last_events.elapsed() >= QUIET_AFTER;
                            pulls.after_empty(Instant::now(), if quiet { QUIET_POLL } else { BUSY_POLL });
                            if quiet && doorbell.is_none() {
                                match platform.bus.doorbell(&spec).await {
                                    // Pull again: an event published before the subscription
                                    // does not ring it.
                                    Ok(bell) => {
                                        doorbell = Some(bell);
                                        pulls.want(Instant::now());
                                    }
                                    Err(e) => tracing::debug!(consumer = %name, error = %e, "no doorbell; polling"),
                                }
                            }
                        } else {
                            delays = crate::retry::backoff();
                            last_events = Instant::now();
                            doorbell = None;
                        }
                        lanes.release_finished(&mut idle_rx);
                        let batches = Batches {
                            platform: &platform,
                            handler: &*handler,
                            consumer: &name,
                            settings: Settings::of(&current),
                            redeliveries: &due_tx,
                        };
                        batches.queue(&mut lanes, messages, asked).await;
                        lanes.dispatch().await;
                    }
                    Ok(Fetched { result: Err(e), .. }) => {
                        tracing::warn!(consumer = %name, error = %e, "fetching from JetStream failed");
                        consumer = None;
                        pulls.back_off(delays.next().unwrap_or(Duration::from_secs(1)));
                    }
                    Err(e) => {
                        tracing::error!(consumer = %name, error = %e, "the fetch task failed");
                        pulls.back_off(delays.next().unwrap_or(Duration::from_secs(1)));
                    }
                }
            }
            rung = OptionFuture::from(doorbell.as_mut().map(|bell| bell.next())), if doorbell.is_some() => {
                doorbell = None;
                // Every instance reading the durable hears the bell, and only one gets the event:
                // the others go back to their quiet polls after the pulls `Pulls::want` adds.
                if rung.flatten().is_some() {
                    pulls.want(Instant::now());
                }
            }
            Some(due) = due_rx.recv() => pulls.want(due),
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                lanes.keep_in_progress().await;
            }
        }
    }
    // Shutting down: the lanes finish what they hold; what was fetched but not started goes back
    // for another instance, oldest first, since JetStream redelivers in the order it is handed
    // back. Until then it stays in progress: handed to another instance while a lane still works
    // on its key, a key's later events could commit before its earlier ones.
    lanes.senders.clear();
    if let Some(Ok(Fetched {
        asked,
        consumer,
        result: Ok(messages),
    })) = OptionFuture::from(fetching).await
    {
        let batches = Batches {
            platform: &platform,
            handler: &*handler,
            consumer: &name,
            settings: Settings::of(&consumer),
            redeliveries: &due_tx,
        };
        batches.queue(&mut lanes, messages, asked).await;
    }
    loop {
        let wake = lanes.next_progress();
        tokio::select! {
            joined = workers.join_next() => if joined.is_none() { break },
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                lanes.keep_in_progress().await;
            }
        }
    }
    let waiting: Vec<Message> = lanes.waiting.into_iter().map(|q| q.message).collect();
    hand_back(&waiting).await;
}

/// Gives messages back to JetStream for any reader, at once and in the order given, which is the
/// order it redelivers them in.
async fn hand_back(messages: &[Message]) {
    for message in messages {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

/// What a fetch brought, from which consumer, and when it asked: the messages' ack waits started
/// no earlier.
struct Fetched {
    consumer: PullConsumer,
    asked: Instant,
    result: Result<Vec<Message>, async_nats::Error>,
}

/// The lanes as the loop sees them: the keys each busy lane is processing, and what waits.
struct Lanes<I> {
    senders: Vec<mpsc::Sender<Part<I>>>,
    /// The keys of the part a lane is processing; `None` while it is idle.
    in_flight: Vec<Option<HashSet<u64>>>,
    /// Fetched items not yet given to a lane, in delivery order.
    waiting: VecDeque<Queued<I>>,
    batch: usize,
}

impl<I: Send + 'static> Lanes<I> {
    /// Whether a fetch would feed an idle lane. An idle lane has already taken what it could, so
    /// what still waits belongs to busy lanes' keys; it may grow to a batch, and so no lane is
    /// ever given more than a batch.
    fn wants_more(&self) -> bool {
        self.in_flight.iter().any(Option::is_none) && self.waiting.len() < self.batch
    }

    /// How many lanes, counted from the first, may take work now: the [`STEADY_LANES`] always,
    /// the rest only while a backlog (half a batch or more) waits.
    fn usable(&self) -> usize {
        if self.waiting.len() >= self.batch.div_ceil(2) {
            self.in_flight.len()
        } else {
            STEADY_LANES.min(self.in_flight.len())
        }
    }

    /// Whether a lane that takes work whenever idle is idle.
    fn steady_idle(&self) -> bool {
        self.in_flight
            .iter()
            .take(STEADY_LANES)
            .any(Option::is_none)
    }

    /// Marks every lane that has reported finishing as idle, so that all of them release their
    /// keys before what waits is handed out.
    fn release_finished(&mut self, finished: &mut mpsc::UnboundedReceiver<usize>) {
        while let Ok(lane) = finished.try_recv() {
            self.in_flight[lane] = None;
        }
    }

    /// Hands the idle lanes that may take work what waits for them (see [`assign`], [`Lanes::usable`]).
    async fn dispatch(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let keys: Vec<u64> = self.waiting.iter().map(|q| q.key).collect();
        let lanes = assign(&keys, &self.in_flight, self.usable());
        let mut parts: HashMap<usize, (Part<I>, HashSet<u64>)> = HashMap::new();
        let mut kept = VecDeque::new();
        for (queued, lane) in self.waiting.drain(..).zip(lanes) {
            let Some(lane) = lane else {
                kept.push_back(queued);
                continue;
            };
            let (part, keys) = parts.entry(lane).or_insert_with(|| {
                let part = Part {
                    items: Vec::new(),
                    messages: Vec::new(),
                    settings: queued.settings,
                };
                (part, HashSet::new())
            });
            // Of the lookups a part mixes, the latest: the server's settings as they are now.
            part.settings = queued.settings;
            part.items.push(queued.item);
            part.messages.push(queued.message);
            keys.insert(queued.key);
        }
        self.waiting = kept;
        for (lane, (part, keys)) in parts {
            self.in_flight[lane] = Some(keys);
            let _ = self.senders[lane].send(part).await;
        }
    }

    /// When JetStream must next hear about a waiting item, if any waits.
    fn next_progress(&self) -> Option<Instant> {
        self.waiting.iter().map(Queued::progress_due).min()
    }

    /// Tells JetStream that the waiting items that are due are still in progress.
    async fn keep_in_progress(&mut self) {
        let now = Instant::now();
        for queued in self.waiting.iter_mut() {
            if queued.progress_due() <= now {
                let _ = queued.message.ack_with(AckKind::Progress).await;
                queued.since = Instant::now();
            }
        }
    }
}

/// Lanes that take work whenever they are idle. More lanes take work only while a backlog waits:
/// on two cores a third lane drained a backlog a sixth faster, but as a steady lane it split the
/// small fetches of a pixel load into more transactions than the gateway could spare the CPU for
/// (docs/benchmarks.md, session 10). As a backlog lane it still cost pixels some (session 11),
/// which is why the scorer runs two lanes unless told otherwise.
const STEADY_LANES: usize = 2;

/// Which idle lane among the first `usable` each waiting item (by key, in delivery order) goes
/// to, or `None` to keep waiting, given the keys each lane is processing (`None`: idle). A key a
/// busy lane is processing waits for it, so one key's items keep their order and never run in two lanes at
/// once. Other keys spread over the idle lanes, a key's items all to one: giving everything to one
/// idle lane instead measured no faster and had a longer latency tail (docs/benchmarks.md,
/// session 10).
fn assign(keys: &[u64], in_flight: &[Option<HashSet<u64>>], usable: usize) -> Vec<Option<usize>> {
    let idle: Vec<usize> = (0..usable.min(in_flight.len()))
        .filter(|&lane| in_flight[lane].is_none())
        .collect();
    keys.iter()
        .map(|key| {
            let busy = in_flight.iter().flatten().any(|keys| keys.contains(key));
            (!busy && !idle.is_empty()).then(|| idle[(*key % idle.len() as u64) as usize])
        })
        .collect()
}

/// How soon the loop pulls again after a pull found nothing: soon while events came a moment ago
/// (a steady sender's next events are a few milliseconds away), rarely once the stream has been
/// quiet for a while. A quiet loop is woken by its doorbell ([`crate::bus::Bus::doorbell`]) when
/// an event is published, and pulls when events it gave back fall due; its polls only find what
/// nothing announces (events another instance gave back or left past their ack wait), so an idle
/// consumer costs the server one pull a second.
const BUSY_POLL: Duration = Duration::from_millis(5);
/// How often the loop pulls while only lanes beyond the steady ones are idle: well within the time
/// half a batch takes to gather (the scorer's 1,000 events: 100 ms at 10,000 events/s).
const BACKLOG_POLL: Duration = Duration::from_millis(20);
/// How often a quiet loop, its doorbell set, pulls anyway.
pub const QUIET_POLL: Duration = Duration::from_secs(1);
const QUIET_AFTER: Duration = Duration::from_millis(200);

/// When after a wanted pull the loop pulls again, in case the first came too soon: the doorbell
/// rings as an event is published, a moment before the stream has stored it, and a redelivery's
/// delay starts when the server reads the nak, a moment after it was sent; on a loaded machine
/// either moment can stretch.
const SETTLE: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(300),
];

/// When the loop pulls next for a lane with nothing to do: polls, pulls wanted at given moments
/// whatever the polling says (when the doorbell rings, when it is set, for an event published just
/// before, and when events given back for a later try fall due), and the backoff after a failure.
/// A wanted moment is served by a pull sent after it, not by one already on its way.
struct Pulls {
    next: Instant,
    wanted: BTreeSet<Instant>,
    /// No pull before this, however wanted: the backoff after a failed pull or lookup.
    not_before: Instant,
}

impl Pulls {
    fn new() -> Self {
        let now = Instant::now();
        Pulls {
            next: now,
            wanted: BTreeSet::new(),
            not_before: now,
        }
    }

    /// A pull at `at`, and again at each of [`SETTLE`] after it.
    fn want(&mut self, at: Instant) {
        self.wanted.insert(at);
        self.wanted.extend(SETTLE.iter().map(|settle| at + *settle));
        self.next = self.next.min(at.max(self.not_before));
    }

    /// A pull goes out `now`: it serves every moment wanted until then.
    fn sent(&mut self, now: Instant) {
        while self.wanted.first().is_some_and(|first| *first <= now) {
            self.wanted.pop_first();
        }
    }

    /// A pull that went out found nothing (as of `now`): the next after `poll`, or at the next
    /// wanted moment if that is sooner (at once for one wanted while that pull was on its way).
    fn after_empty(&mut self, now: Instant, poll: Duration) {
        self.next = now + poll;
        if let Some(first) = self.wanted.first() {
            self.next = self.next.min((*first).max(self.not_before));
        }
    }

    /// A pull or lookup failed: none for `delay`, however wanted.
    fn back_off(&mut self, delay: Duration) {
        self.next = Instant::now() + delay;
        self.not_before = self.next;
    }
}

/// A pull the server leaves unanswered (a connection lost with it) is given up after this long.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);

/// Whatever has arrived, up to `batch` messages, answered at once: no `expires`, so the pull never
/// waits on the server. On nats-server 2.9.10 a waiting pull that expired as a nacked message came
/// due lost that message (`docs/durability.md`, "Pulls that never wait").
async fn fetch(consumer: PullConsumer, batch: usize, name: Arc<str>) -> Fetched {
    let asked = Instant::now();
    let result = async {
        let mut pulled = consumer.fetch().max_messages(batch).messages().await?;
        let mut messages = Vec::new();
        let deadline = tokio::time::sleep(PULL_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = pulled.next() => match next {
                    Some(message) => messages.push(message?),
                    None => break,
                },
                // What came is kept; anything later is redelivered after its ack wait.
                () = &mut deadline => {
                    tracing::warn!(consumer = %name, "a pull went unanswered; pulling again");
                    break;
                }
            }
        }
        Ok(messages)
    }
    .await;
    Fetched {
        consumer,
        asked,
        result,
    }
}

/// How a lane's attempts at a part ended.
enum Held<D> {
    /// Committed, by the attempt that started then.
    Committed(D, Instant),
    /// Failed for a reason of the events' own: retried in halves, or redelivered.
    Failed(sqlx::Error),
    /// Held until the service began shutting down.
    ShuttingDown,
}

struct Batches<'a, H> {
    platform: &'a Platform,
    handler: &'a H,
    consumer: &'a str,
    settings: Settings,
    /// Told when events given back for a later try fall due.
    redeliveries: &'a mpsc::UnboundedSender<Instant>,
}

impl<H: Handler> Batches<'_, H> {
    async fn process(&self, items: Vec<H::Item>, messages: Vec<Message>) {
        // The part stays in progress with JetStream for as long as this lane holds it: through a
        // slow transaction, and through the retries while the database is away.
        let held = self
            .in_progress(messages.iter(), self.attempt(&items))
            .await;
        let error = match held {
            Held::Committed(done, started) => {
                self.handler.committed(done).await;
                self.acknowledge(&messages).await;
                self.platform
                    .metrics
                    .batch_duration
                    .with_label_values(&[self.consumer])
                    .observe(started.elapsed().as_secs_f64());
                return;
            }
            Held::ShuttingDown => return hand_back(&messages).await,
            Held::Failed(error) => error,
        };
        let error_text = crate::error_chain(&error);
        if messages.len() > 1 {
            if self.platform.shutdown_token().is_cancelled() {
                // Splitting would start new transactions after shutdown began.
                return hand_back(&messages).await;
            }
            tracing::warn!(consumer = self.consumer, events = messages.len(), error = %error_text, "batch failed; retrying it in halves");
            self.halves(items, messages).await;
            return;
        }
        tracing::warn!(consumer = self.consumer, error = %error_text, "event failed; it will be redelivered");
        self.platform
            .metrics
            .events_failed
            .with_label_values(&[self.consumer])
            .inc_by(messages.len() as u64);
        for message in messages {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            if self.settings.max_deliver > 0 && delivered >= self.settings.max_deliver {
                self.dead_letter(&message, &error.to_string()).await;
            } else {
                self.redeliver_after(&message, Duration::from_secs(1)).await;
            }
        }
    }

    /// Processes the items until they commit or fail for a reason of their own. PostgreSQL
    /// unreachable, or a lost deadlock, says nothing about the events: the attempt is repeated,
    /// backing off, until the database takes it or the service shuts down.
    async fn attempt(&self, items: &[H::Item]) -> Held<H::Done> {
        let token = self.platform.shutdown_token();
        let mut delays = crate::retry::backoff();
        loop {
            let started = Instant::now();
            let error = match self.handler.process(self.consumer, items).await {
                Ok(done) => return Held::Committed(done, started),
                Err(e) => e,
            };
            if !is_transient(&error) {
                return Held::Failed(error);
            }
            tracing::warn!(consumer = self.consumer, error = %crate::error_chain(&error), "batch held until the database can take it (unreachable, busy, or its schema not yet migrated)");
            tokio::select! {
                () = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))) => {}
                () = token.cancelled() => return Held::ShuttingDown,
            }
        }
    }

    /// Runs `work`, telling JetStream that `messages` are in progress as their ack wait requires,
    /// so that work slower than the ack wait (a large batch on a busy database) does not have
    /// them handed to another reader and processed twice.
    async fn in_progress<'m, T>(
        &self,
        messages: impl Iterator<Item = &'m Message> + Clone,
        work: impl Future<Output = T>,
    ) -> T {
        let every = self.settings.progress_every();
        let mut due = tokio::time::interval_at(Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = due.tick() => still_in_progress(messages.clone()).await,
            }
        }
    }

    /// Retries a failed part as two halves, in delivery order, each halved again while it fails,
    /// so that a bad event fails alone after about 2·log2(n) transactions: retrying a part of the
    /// scorer's 2,000 events one at a time took 2,000 more. The later half is kept in progress
    /// while the earlier one runs, however long that takes (the database may go away in the
    /// middle). Shutting down, it goes back untouched once the earlier half is done, so a key's
    /// later events cannot commit before its earlier ones elsewhere.
    async fn halves(&self, mut items: Vec<H::Item>, mut messages: Vec<Message>) {
        // Each half's reports start a new interval: reporting the whole part now keeps every
        // event within two intervals (two thirds of the ack wait) of its last report.
        still_in_progress(messages.iter()).await;
        let middle = messages.len() / 2;
        let later_items = items.split_off(middle);
        let later_messages = messages.split_off(middle);
        self.in_progress(
            later_messages.iter(),
            Box::pin(self.process(items, messages)),
        )
        .await;
        if self.platform.shutdown_token().is_cancelled() {
            return hand_back(&later_messages).await;
        }
        Box::pin(self.process(later_items, later_messages)).await;
    }

    /// Puts what a fetch brought in line for the lanes; a message that cannot be read goes to the
    /// dead-letter subject at once.
    async fn queue(&self, lanes: &mut Lanes<H::Item>, messages: Vec<Message>, asked: Instant) {
        for message in messages {
            match self.handler.parse(&message) {
                Ok(item) => lanes.waiting.push_back(Queued {
                    key: self.handler.key(&item),
                    item,
                    message,
                    settings: self.settings,
                    since: asked,
                }),
                Err(reason) => self.dead_letter(&message, &reason).await,
            }
        }
    }

    async fn acknowledge(&self, messages: &[Message]) {
        // Plain acks, not confirmed ones: a lost ack only means a redelivery, which every
        // consumer turns into a no-op, and waiting for each confirmation costs a round trip.
        for message in messages {
            if let Err(e) = message.ack().await {
                tracing::warn!(consumer = self.consumer, error = %e, "ack failed; the message will be redelivered and skipped");
            }
        }
        self.platform
            .metrics
            .events_consumed
            .with_label_values(&[self.consumer])
            .inc_by(messages.len() as u64);
    }

    /// Gives `message` back for another try after `delay`, and has the loop pull when it falls
    /// due: a redelivery is not published, so it would wait for a quiet loop's next poll.
    async fn redeliver_after(&self, message: &Message, delay: Duration) {
        let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        let _ = self.redeliveries.send(Instant::now() + delay);
    }

    /// Keeps the message on `deadletter.<subject>` with why, then terminates it.
    async fn dead_letter(&self, message: &Message, reason: &str) {
        let ns = self.platform.bus.namespace();
        let original = ns
            .strip(message.subject.as_str())
            .unwrap_or(message.subject.as_str())
            .to_owned();
        let subject = ns.subject(&format!("{}.{original}", subjects::DEAD_LETTER_PREFIX));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Leadflow-Dead-Letter-Reason",
            reason.chars().take(500).collect::<String>().as_str(),
        );
        headers.insert("Leadflow-Consumer", self.consumer);
        // How many times it was tried, so an operator can tell "unreadable" (1) from "kept failing".
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        headers.insert("Leadflow-Deliveries", delivered.to_string().as_str());
        let published = match self
            .platform
            .bus
            .jetstream()
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if published {
            let _ = message.ack_with(AckKind::Term).await;
            self.platform
                .metrics
                .events_dead_lettered
                .with_label_values(&[self.consumer])
                .inc();
            tracing::warn!(consumer = self.consumer, reason, "message dead-lettered");
        } else {
            // Could not keep it: let JetStream redeliver rather than lose it.
            self.redeliver_after(message, Duration::from_secs(5)).await;
        }
    }
}

/// Tells JetStream that the messages are still in progress, so their ack wait starts again.
async fn still_in_progress<'m>(messages: impl Iterator<Item = &'m Message>) {
    for message in messages {
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

/// Failures that say nothing about the events: the database is unreachable or busy, the
/// transaction lost a deadlock, or the schema is not (or no longer) the one this release expects,
/// as during a rollout whose migration has not run yet (42P01 undefined table, 42703 undefined
/// column). Retrying the same batch later is right for them; dead-lettering would take good events
/// out of the stream.
fn is_transient(error: &sqlx::Error) -> bool {
    db::is_unavailable(error)
        || matches!(error, sqlx::Error::Database(e)
            if e.code().is_some_and(|c| matches!(c.as_ref(), "40P01" | "40001" | "42P01" | "42703")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_on_its_way_does_not_serve_a_moment_wanted_after_it_was_sent() {
        let mut pulls = Pulls::new();
        let sent = Instant::now();
        pulls.sent(sent);
        pulls.after_empty(sent, QUIET_POLL);
        // A ring while the next pull is out: when it comes back empty, the next pull is at once.
        let rung = sent + Duration::from_millis(3);
        pulls.want(rung);
        assert_eq!(pulls.next, rung);
        pulls.after_empty(rung, QUIET_POLL);
        assert_eq!(pulls.next, rung);
        // A pull sent after it serves it; the settling pulls are still to come, the first next.
        pulls.sent(rung + Duration::from_millis(1));
        pulls.after_empty(rung, QUIET_POLL);
        assert_eq!(pulls.next, rung + SETTLE[0]);
        assert_eq!(pulls.wanted.len(), SETTLE.len());
    }

    #[test]
    fn a_wanted_pull_waits_for_a_backoff() {
        let mut pulls = Pulls::new();
        pulls.back_off(Duration::from_secs(4));
        let until = pulls.next;
        pulls.want(Instant::now());
        assert_eq!(pulls.next, until);
        pulls.after_empty(Instant::now(), 10 * QUIET_POLL);
        assert_eq!(pulls.next, until);
    }

    #[test]
    fn free_keys_spread_over_idle_lanes_and_a_busy_lanes_keys_wait() {
        // Lane 1 is busy with key 7; lanes 0 and 2 are idle.
        let in_flight = [None, Some(HashSet::from([7])), None];
        let keys = [4, 7, 5, 4, 8, 7, 5];
        assert_eq!(
            assign(&keys, &in_flight, 3),
            [Some(0), None, Some(2), Some(0), Some(0), None, Some(2)],
            "even keys to lane 0, odd to lane 2, key 7 waits for lane 1"
        );
        assert_eq!(
            assign(&[4, 5], &[Some(HashSet::from([7]))], 1),
            [None, None],
            "no idle lane: everything waits"
        );
    }

    #[test]
    fn lanes_beyond_the_usable_ones_take_nothing_but_their_keys_still_wait_for_them() {
        // Lane 2, not usable now (no backlog), is still busy with key 9.
        let in_flight = [None, None, Some(HashSet::from([9]))];
        assert_eq!(
            assign(&[4, 9, 5], &in_flight, 2),
            [Some(0), None, Some(1)],
            "key 9 waits for lane 2; the rest go to lanes 0 and 1"
        );
        assert_eq!(
            assign(
                &[4, 5],
                &[Some(HashSet::from([1])), Some(HashSet::from([2])), None],
                2
            ),
            [None, None],
            "only a lane that may not be used is idle: everything waits"
        );
    }
}
