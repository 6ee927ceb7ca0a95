//! The text of notification e-mails: a plain-text and an HTML body with the same content.
//! Everything that comes from users (names, notes, lead names) is escaped in the HTML.

use serde_json::Value;

use crate::recipients;

/// What the message says, before it becomes MIME.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The facts a notification e-mail needs beyond the notification itself.
pub struct Context<'a> {
    pub recipient_name: &'a str,
    /// The lead's display name, when the lead exists.
    pub lead_name: Option<&'a str>,
}

pub fn compose(kind: &str, payload: &Value, ctx: &Context<'_>) -> Mail {
    let lead = ctx
        .lead_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or("a lead");
    let (subject, headline) = match kind {
        recipients::ASSIGNED => (
            format!("New lead assigned to you: {lead}"),
            format!("{lead} has been assigned to you."),
        ),
        recipients::TRANSFERRED_IN => (
            format!("Lead transferred to you: {lead}"),
            format!("{lead} has been transferred to you."),
        ),
        recipients::TRANSFERRED_OUT => (
            format!("Lead transferred away: {lead}"),
            format!("{lead} has been transferred to another rep."),
        ),
        recipients::COMPLETED => (
            format!("Assignment completed: {lead}"),
            format!("The assignment of {lead} you made has been completed."),
        ),
        recipients::LEAD_HOT => (
            format!("{lead} is now Hot"),
            match payload.get("new_score").and_then(Value::as_i64) {
                Some(score) => format!("{lead} just turned Hot (score {score}). Now is a good time to call."),
                None => format!("{lead} just turned Hot. Now is a good time to call."),
            },
        ),
        "webhook.disabled" => (
            "A webhook was disabled".to_owned(),
            "A webhook you registered kept failing and has been disabled. Fix the endpoint, then re-enable it.".to_owned(),
        ),
        other => (format!("leadflow: {other}"), format!("Something happened: {other}.")),
    };
    let mut details: Vec<(&str, String)> = Vec::new();
    if let Some(id) = payload.get("lead_id").and_then(Value::as_str) {
        details.push(("Lead id", id.to_owned()));
    }
    if let Some(note) = payload
        .get("note")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        details.push(("Note", note.to_owned()));
    }
    if let Some(error) = payload.get("last_error").and_then(Value::as_str) {
        details.push(("Last error", error.to_owned()));
    }
    let footer = "You get these e-mails because e-mail notifications are on for your leadflow account; \
                  turn them off in your preferences (PATCH /api/auth/me).";

    let mut text = format!("Hello {},\n\n{headline}\n\n", ctx.recipient_name);
    for (label, value) in &details {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text.push_str(&format!("\n-- \n{footer}\n"));

    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Hello {},</p><p><strong>{}</strong></p>",
        escape(ctx.recipient_name),
        escape(&headline)
    );
    if !details.is_empty() {
        html.push_str("<table>");
        for (label, value) in &details {
            html.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape(label),
                escape(value)
            ));
        }
        html.push_str("</table>");
    }
    html.push_str(&format!(
        "<p style=\"color:#666;font-size:small\">{}</p></body></html>",
        escape(footer)
    ));

    // A subject is one line: a newline in a lead name must not start a new header.
    let subject: String = subject
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Mail {
        subject,
        text,
        html,
    }
}

/// HTML text and attribute escaping.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
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
    use serde_json::json;

    use super::*;

    #[test]
    fn user_text_is_escaped_in_html_and_kept_in_plain_text() {
        let ctx = Context {
            recipient_name: "Ada <admin>",
            lead_name: Some("Bobby \"Tables\" & Co\r\nBcc: x@evil"),
        };
        let mail = compose(
            recipients::ASSIGNED,
            &json!({"lead_id": "l-1", "note": "<script>alert(1)</script>"}),
            &ctx,
        );
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(mail.html.contains("Ada &lt;admin&gt;"));
        assert!(mail.html.contains("Bobby &quot;Tables&quot; &amp; Co"));
        assert!(mail.text.contains("Note: <script>alert(1)</script>"));
        assert!(
            !mail.subject.contains('\n') && !mail.subject.contains('\r'),
            "{}",
            mail.subject
        );
    }

    #[test]
    fn each_kind_has_its_own_subject() {
        let ctx = Context {
            recipient_name: "Ada",
            lead_name: None,
        };
        let hot = compose(recipients::LEAD_HOT, &json!({"new_score": 81}), &ctx);
        assert_eq!(hot.subject, "a lead is now Hot");
        assert!(hot.text.contains("score 81"));
        let moved = compose(recipients::TRANSFERRED_OUT, &json!({}), &ctx);
        assert!(moved.subject.starts_with("Lead transferred away"));
    }
}
