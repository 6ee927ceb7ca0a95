//! One Prometheus registry per service (not the global one), so `leadflow up` can run three
//! services in one process, and tests many, without their metrics colliding.

use std::collections::HashMap;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::db::{BreakerState, PoolStats};

/// Request latency buckets, in seconds: from a cached read to a slow import.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub db_pool_connections: IntGaugeVec,
    pub db_up: IntGauge,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub nats_up: IntGauge,
    pub events_published: IntCounterVec,
    pub events_publish_failed: IntCounterVec,
    pub events_consumed: IntCounterVec,
    pub events_failed: IntCounterVec,
    pub events_dead_lettered: IntCounterVec,
    pub batch_duration: HistogramVec,
    pub consumer_pending: IntGaugeVec,
    pub consumer_ack_pending: IntGaugeVec,
    pub outbox_pending: IntGauge,
}

impl Metrics {
    /// Every series carries `service="<name>"`, so one Prometheus job can scrape them all.
    pub fn new(service: &str) -> Result<Self, prometheus::Error> {
        let labels = HashMap::from([("service".to_owned(), service.to_owned())]);
        let registry = Registry::new_custom(Some("leadflow".into()), Some(labels))?;
        let reg = Registrar(&registry);
        let metrics = Self {
            http_requests: reg.counter_vec(
                "http_requests_total",
                "HTTP requests answered, by matched route, method and status.",
                &["route", "method", "status"],
            )?,
            http_duration: reg.histogram_vec(
                "http_request_duration_seconds",
                "HTTP request latency, by matched route and method.",
                &["route", "method"],
            )?,
            db_pool_connections: reg.gauge_vec(
                "db_pool_connections",
                "Database pool connections by state (size, idle, in_use, max).",
                &["state"],
            )?,
            db_up: reg.gauge("db_up", "1 when the last database probe succeeded.")?,
            breaker_state: reg.gauge_vec(
                "circuit_breaker_state",
                "1 for the database circuit breaker's current state (closed, open, half_open).",
                &["state"],
            )?,
            breaker_transitions: reg.counter_vec(
                "circuit_breaker_transitions_total",
                "Database circuit breaker transitions, by the state entered.",
                &["to"],
            )?,
            nats_up: reg.gauge("nats_up", "1 while the NATS connection is established.")?,
            events_published: reg.counter_vec(
                "events_published_total",
                "Events acknowledged by JetStream, by stream.",
                &["stream"],
            )?,
            events_publish_failed: reg.counter_vec(
                "events_publish_failed_total",
                "Events JetStream did not acknowledge (kept for retry or refused), by stream.",
                &["stream"],
            )?,
            events_consumed: reg.counter_vec(
                "events_consumed_total",
                "Events processed and acknowledged, by consumer.",
                &["consumer"],
            )?,
            events_failed: reg.counter_vec(
                "events_failed_total",
                "Events that failed alone, to be redelivered (or dead-lettered at the last delivery), by consumer.",
                &["consumer"],
            )?,
            events_dead_lettered: reg.counter_vec(
                "events_dead_lettered_total",
                "Events moved to the dead-letter subject after max_deliver attempts, by consumer.",
                &["consumer"],
            )?,
            batch_duration: reg.histogram_vec(
                "consumer_batch_duration_seconds",
                "Time a consumed batch took from the start of its transaction to its acknowledgement, by consumer.",
                &["consumer"],
            )?,
            consumer_pending: reg.gauge_vec(
                "consumer_pending_messages",
                "Messages in the stream not yet delivered to the consumer (lag).",
                &["consumer"],
            )?,
            consumer_ack_pending: reg.gauge_vec(
                "consumer_ack_pending_messages",
                "Messages delivered to the consumer and not yet acknowledged.",
                &["consumer"],
            )?,
            outbox_pending: reg.gauge(
                "outbox_pending_events",
                "Domain events written to the outbox and not yet acknowledged by JetStream.",
            )?,
            registry,
        };
        metrics.set_breaker_state(BreakerState::Closed);
        Ok(metrics)
    }

    /// For service-specific metrics, registered next to these.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn record_breaker_transition(&self, state: BreakerState) {
        self.breaker_transitions
            .with_label_values(&[state.as_str()])
            .inc();
        self.set_breaker_state(state);
    }

    pub fn set_breaker_state(&self, current: BreakerState) {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            self.breaker_state
                .with_label_values(&[state.as_str()])
                .set(i64::from(state == current));
        }
    }

    pub fn set_pool(&self, stats: PoolStats) {
        for (state, value) in [
            ("size", stats.size),
            ("idle", stats.idle),
            ("in_use", stats.in_use),
            ("max", stats.max),
        ] {
            self.db_pool_connections
                .with_label_values(&[state])
                .set(i64::from(value));
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let metric = IntGauge::new(name, help)?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        let metric = HistogramVec::new(opts, labels)?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_service_label_and_namespace() {
        let m = Metrics::new("scorer").expect("registry");
        m.http_requests
            .with_label_values(&["/health", "GET", "200"])
            .inc();
        let text = m.render().expect("render");
        let line = text
            .lines()
            .find(|l| l.starts_with("leadflow_http_requests_total{"))
            .expect("request counter rendered");
        for label in [
            r#"route="/health""#,
            r#"method="GET""#,
            r#"status="200""#,
            r#"service="scorer""#,
        ] {
            assert!(line.contains(label), "{line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("leadflow_circuit_breaker_state{")
                    && l.contains(r#"state="closed""#)
                    && l.ends_with(" 1"))
        );
    }
}
