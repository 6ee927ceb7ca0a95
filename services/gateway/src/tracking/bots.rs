//! Known bots, crawlers, link scanners and mail-privacy proxies, recognised from the user agent.
//! Their events are stored with a `suppressed_reason` and never scored: a security gateway that
//! clicks every link in a mail, or Apple Mail Privacy Protection fetching every pixel, says nothing
//! about the person. The lists are lower-case substrings, documented here and in the README.

/// (substring, reason)
const AGENTS: &[(&str, &str)] = &[
    // Mail privacy proxies and image caches that fetch every pixel on delivery.
    ("googleimageproxy", "mail_privacy_proxy"),
    ("ggpht.com", "mail_privacy_proxy"),
    ("yahoomailproxy", "mail_privacy_proxy"),
    ("apple mail privacy", "mail_privacy_proxy"),
    // Link scanners of mail security gateways.
    ("barracuda", "link_scanner"),
    ("mimecast", "link_scanner"),
    ("proofpoint", "link_scanner"),
    ("safelinks", "link_scanner"),
    ("urldefense", "link_scanner"),
    ("symantec", "link_scanner"),
    ("trendmicro", "link_scanner"),
    // Search engines, SEO and social crawlers, monitors, headless browsers and HTTP libraries.
    ("googlebot", "crawler"),
    ("bingbot", "crawler"),
    ("yandexbot", "crawler"),
    ("baiduspider", "crawler"),
    ("duckduckbot", "crawler"),
    ("ahrefsbot", "crawler"),
    ("semrushbot", "crawler"),
    ("facebookexternalhit", "crawler"),
    ("slackbot", "crawler"),
    ("twitterbot", "crawler"),
    ("linkedinbot", "crawler"),
    ("pingdom", "monitor"),
    ("uptimerobot", "monitor"),
    ("headlesschrome", "headless_browser"),
    ("phantomjs", "headless_browser"),
    ("python-requests", "script"),
    ("curl/", "script"),
    ("wget/", "script"),
    ("go-http-client", "script"),
    ("bot", "bot"),
    ("spider", "bot"),
    ("crawler", "bot"),
];

/// Why events from this user agent are not scored, if they are not.
pub fn suppression(user_agent: Option<&str>) -> Option<&'static str> {
    let agent = user_agent?.to_ascii_lowercase();
    AGENTS
        .iter()
        .find(|(needle, _)| agent.contains(needle))
        .map(|(_, reason)| *reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_pass_and_machines_are_named() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(suppression(Some(chrome)), None);
        assert_eq!(suppression(None), None);
        assert_eq!(
            suppression(Some("Mozilla/5.0 (compatible; Googlebot/2.1)")),
            Some("crawler")
        );
        assert_eq!(
            suppression(Some("Mozilla/5.0 (via ggpht.com GoogleImageProxy)")),
            Some("mail_privacy_proxy")
        );
        assert_eq!(
            suppression(Some("Barracuda Sentinel")),
            Some("link_scanner")
        );
        assert_eq!(suppression(Some("curl/8.5.0")), Some("script"));
    }
}
