//! `/health` as a page a person can read at a glance: urgency badge, pool chart, breaker, NATS and
//! consumer lag. Server-rendered, refreshing itself every 5 s, with no external assets (it must
//! work when the network is what is broken). Every value is escaped: error messages can quote input.

use std::fmt::Write;

use super::{Connectivity, HealthReport, Urgency};

pub fn render_html(report: &HealthReport) -> String {
    let urgency = match report.urgency {
        Urgency::Low => ("low", "#1a7f37"),
        Urgency::Medium => ("medium", "#9a6700"),
        Urgency::High => ("high", "#bc4c00"),
        Urgency::Critical => ("critical", "#cf222e"),
    };
    let status = serde_plain(&report.status);
    let db = &report.database;
    let pool = db.pool;
    let pct = (pool.utilization * 100.0).clamp(0.0, 100.0);

    let mut page = String::with_capacity(4096);
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{service} health: {status}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1f2328}}
h1{{font-size:1.4rem}} section{{border:1px solid #d0d7de;border-radius:8px;padding:1rem;margin:1rem 0}}
.badge{{display:inline-block;padding:.2rem .7rem;border-radius:1rem;color:#fff;font-weight:600}}
.bar{{background:#eaeef2;border-radius:4px;height:1.2rem;overflow:hidden}}
.fill{{height:100%;background:{bar}}} table{{border-collapse:collapse;width:100%}}
td,th{{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eaeef2}} .muted{{color:#656d76}}
code{{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}}
</style></head><body>
<h1>{service} <span class="muted">v{version}</span></h1>
<p><span class="badge" style="background:{color}">urgency: {urgency}</span>
 status <strong>{status}</strong> · up {uptime}s · refreshes every 5 s · <a href="health.json">health.json</a> · <a href="metrics">metrics</a></p>
"#,
        service = esc(&report.service),
        version = esc(report.version),
        status = status,
        color = urgency.1,
        urgency = urgency.0,
        uptime = report.uptime_s,
        bar = if pct >= 90.0 {
            "#cf222e"
        } else if pct >= 75.0 {
            "#9a6700"
        } else {
            "#1a7f37"
        },
    );

    let _ = write!(
        page,
        r#"<section><h2>Database: {state}</h2>"#,
        state = if db.status == Connectivity::Connected {
            "connected"
        } else {
            "disconnected"
        }
    );
    if let Some(kind) = db.error_type {
        let _ = write!(
            page,
            "<p><code>{}</code>: {}</p><p><strong>Fix:</strong> {}</p>",
            kind.as_str(),
            esc(db.error_message.as_deref().unwrap_or("")),
            esc(db.fix.unwrap_or("")),
        );
    }
    if let Some(ms) = db.latency_ms {
        let _ = write!(page, "<p>probe latency {ms:.1} ms</p>");
    }
    let _ = write!(
        page,
        r#"<p>Pool: {in_use} in use, {idle} idle, {size} open of {max} max ({pct:.0}% used)</p>
<div class="bar" role="img" aria-label="pool utilization {pct:.0}%"><div class="fill" style="width:{pct:.1}%"></div></div></section>"#,
        in_use = pool.in_use,
        idle = pool.idle,
        size = pool.size,
        max = pool.max,
    );

    let breaker = &report.circuit_breaker;
    let _ = write!(
        page,
        "<section><h2>Circuit breaker: {}</h2><p>consecutive failures: {}{}</p></section>",
        breaker.state.as_str(),
        breaker.failures,
        breaker
            .opened_at
            .and_then(|t| t
                .format(&time::format_description::well_known::Rfc3339)
                .ok())
            .map(|t| format!(" · opened at {t}"))
            .unwrap_or_default()
    );

    let nats = &report.nats;
    let _ = write!(
        page,
        "<section><h2>NATS: {}</h2><p>{} · streams {}</p>",
        serde_plain(&nats.status),
        esc(&nats.url),
        if nats.streams_ready {
            "ready"
        } else {
            "not ready"
        }
    );
    if let Some(err) = &nats.setup_error {
        let _ = write!(page, "<p>{}</p>", esc(err));
    }
    if !report.consumers.is_empty() {
        page.push_str("<table><tr><th>consumer</th><th>pending (lag)</th><th>awaiting ack</th><th>redelivered</th></tr>");
        for c in &report.consumers {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                c.pending,
                c.ack_pending,
                c.redelivered
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</section></body></html>\n");
    page
}

fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<script>"x"&'y'"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }
}
