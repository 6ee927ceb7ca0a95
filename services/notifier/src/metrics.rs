//! The notifier's own series, registered with the service's registry (so they carry
//! `service="notifier"` and appear on its `/metrics`).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct NotifierMetrics {
    /// `notifications_delivered_total{channel, outcome}`: channel `sse|ws|email|webhook`.
    pub delivered: IntCounterVec,
    /// From the event's time to the moment a push is handed to a connection.
    pub push_latency: Histogram,
    /// Open streams by transport.
    pub connections: IntGaugeVec,
    pub webhook_queue: IntGauge,
    pub email_queue: IntGauge,
}

impl NotifierMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let delivered = IntCounterVec::new(
            Opts::new(
                "notifications_delivered_total",
                "Notification deliveries by channel (sse, ws, email, webhook) and outcome.",
            ),
            &["channel", "outcome"],
        )?;
        let push_latency = Histogram::with_opts(
            HistogramOpts::new(
                "notification_push_latency_seconds",
                "From the event's time to its notification being handed to an open connection.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "notification_connections",
                "Open notification streams on this process, by transport.",
            ),
            &["transport"],
        )?;
        let webhook_queue = IntGauge::new(
            "webhook_deliveries_pending",
            "Webhook deliveries of active webhooks waiting for a first try or a retry.",
        )?;
        let email_queue = IntGauge::new("email_queue_pending", "E-mails waiting to be sent.")?;
        registry.register(Box::new(delivered.clone()))?;
        registry.register(Box::new(push_latency.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(webhook_queue.clone()))?;
        registry.register(Box::new(email_queue.clone()))?;
        Ok(Self {
            delivered,
            push_latency,
            connections,
            webhook_queue,
            email_queue,
        })
    }
}
