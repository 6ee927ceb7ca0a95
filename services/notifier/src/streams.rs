//! `GET /api/notifications/stream` (SSE) and `GET /api/notifications/ws` (WebSocket): the same
//! messages, `{id, seq, kind, payload, created_at}`, for the signed-in user only. A client that
//! reconnects with `Last-Event-ID` (SSE header, or `?last_event_id=` on either) first receives what
//! it missed from the table, then live pushes. Both end when the process shuts down.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Router,
    extract::{
        Query, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    auth::{Principal, authenticate},
    error::StreamError,
    hub::{Frame, Subscription, Transport},
    state::AppState,
    store,
};

/// Rows read per resume query, and most a resume replays (older ones stay in the REST list).
const RESUME_PAGE: i64 = 500;
const RESUME_MAX: usize = 10_000;
/// A WebSocket write that takes longer than this means the client is not reading: drop it.
const WS_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Served by `leadflow_platform::long_lived`: an idle stream then holds a fraction of the memory.
pub const SSE_PATH: &str = "/api/notifications/stream";

pub fn router(state: AppState, allowed_origins: &[HeaderValue]) -> Router {
    let router = Router::new()
        .route(SSE_PATH, get(sse))
        .route("/api/notifications/ws", get(ws))
        .with_state(state);
    if allowed_origins.is_empty() {
        return router;
    }
    // EventSource from the web app's origin is a cross-origin request; bearer tokens and tickets,
    // never cookies, so no credentials.
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed_origins.iter().cloned()))
            .allow_methods([Method::GET, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    /// Single-use ticket from the gateway's `POST /api/notifications/ticket`.
    ticket: Option<String>,
    /// Resume after this `seq` (what `Last-Event-ID` carries for SSE).
    last_event_id: Option<String>,
}

fn resume_point(headers: &HeaderMap, query: &StreamQuery) -> Result<Option<i64>, StreamError> {
    let raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone());
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw.parse::<i64>().map(Some).map_err(|_| {
            StreamError::BadRequest(
                "Last-Event-ID must be the `seq` of a notification received earlier.".into(),
            )
        }),
    }
}

/// Pushes for one connection: first the missed rows, then live frames. Registered with the hub
/// before the missed rows are read, so nothing committed in between is lost; a live frame already
/// sent from the table is skipped.
struct Feed {
    backlog: VecDeque<Frame>,
    skip_upto: i64,
    subscription: Subscription,
    shutdown: CancellationToken,
    /// Open streams are re-checked now and then, so a deactivated or signed-out user stops
    /// receiving without having to reconnect first.
    principal: Principal,
    state: AppState,
    recheck: tokio::time::Interval,
}

impl Feed {
    async fn open(
        state: &AppState,
        principal: Principal,
        resume_after: Option<i64>,
        transport: Transport,
    ) -> Result<Self, StreamError> {
        let user = principal.user;
        let subscription = state
            .hub
            .subscribe(user, transport)
            .ok_or(StreamError::TooManyConnections)?;
        let mut backlog = VecDeque::new();
        let mut skip_upto = 0;
        if let Some(mut after) = resume_after {
            let mut conn = state.platform.db.acquire().await?;
            loop {
                let page = store::since(&mut conn, user, after, RESUME_PAGE).await?;
                let full = page.len() as i64 == RESUME_PAGE;
                for n in page {
                    after = n.seq;
                    backlog.push_back(Frame {
                        seq: n.seq,
                        json: n.to_json().into(),
                    });
                }
                if !full || backlog.len() >= RESUME_MAX {
                    break;
                }
            }
            skip_upto = after;
        }
        let mut recheck = tokio::time::interval(state.recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.reset();
        Ok(Self {
            backlog,
            skip_upto,
            subscription,
            shutdown: state.platform.shutdown_token(),
            principal,
            state: state.clone(),
            recheck,
        })
    }

    /// The next frame; `None` when the process shuts down, the hub dropped a slow connection, or
    /// the user's access ended.
    async fn next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        loop {
            let frame = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                frame = self.subscription.rx.recv() => frame?,
                _ = self.recheck.tick() => {
                    // Boxed: every idle connection holds this future's state while it waits, and
                    // inline the database lookup would make each one kilobytes larger. A database
                    // outage is not a reason to cut users off: the stream stays open then.
                    let check = Box::pin(self.principal.still_stands(&self.state));
                    if let Ok(false) = check.await {
                        tracing::info!(user = %self.principal.user, "closing a stream: the user's access ended");
                        return None;
                    }
                    continue;
                }
            };
            if frame.seq > self.skip_upto {
                return Some(frame);
            }
        }
    }
}

async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, StreamError> {
    let resume = resume_point(&headers, &query)?;
    let principal = authenticate(&state, &headers, query.ticket.as_deref()).await?;
    let feed = Feed::open(&state, principal, resume, Transport::Sse).await?;
    let events = futures::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next().await?;
        let event = Event::default()
            .id(frame.seq.to_string())
            .event("notification")
            .data(&*frame.json);
        Some((Ok::<_, Infallible>(event), feed))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.heartbeat))
        .into_response();
    // Proxies such as nginx buffer responses unless told not to; a buffered stream is not real time.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

async fn ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, StreamError> {
    let resume = resume_point(&headers, &query)?;
    let principal = authenticate(&state, &headers, query.ticket.as_deref()).await?;
    let feed = Feed::open(&state, principal, resume, Transport::Ws).await?;
    let heartbeat = state.heartbeat;
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| ws_session(socket, feed, heartbeat)))
}

/// Sends frames and pings until the client leaves, falls behind, or the process shuts down (then
/// with a Close frame, "going away", so the client knows to reconnect elsewhere).
async fn ws_session(socket: WebSocket, mut feed: Feed, heartbeat: Duration) {
    let (mut sink, mut incoming) = socket.split();
    let mut ping = tokio::time::interval(heartbeat);
    ping.tick().await;
    // Browsers answer pings by themselves: a peer silent for two heartbeats is gone (a laptop
    // closed, a network dropped without a FIN) and its connection is not kept open for TCP to notice.
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let outgoing = tokio::select! {
            frame = feed.next() => match frame {
                Some(frame) => Message::Text(frame.json.as_ref().into()),
                None => {
                    let close = axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::AWAY,
                        reason: "reconnect".into(),
                    };
                    let _ = tokio::time::timeout(WS_SEND_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
                    return;
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > heartbeat * 2 {
                    return;
                }
                Message::Ping(Default::default())
            }
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Only that the client is there matters: the stream is one-way.
                Some(Ok(_)) => {
                    last_heard = tokio::time::Instant::now();
                    continue;
                }
            },
        };
        match tokio::time::timeout(WS_SEND_TIMEOUT, sink.send(outgoing)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
