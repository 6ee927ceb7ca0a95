//! Scoring model v1 (DESIGN.md §5, weights and reasons in docs/scoring.md): pure functions, no I/O.
//!
//! A lead's engagement is kept as one running value per signal, decayed exponentially. Decay can be
//! carried forward exactly, so an event is folded in without rereading the lead's history:
//! `value(t) = value(t0) · 2^(-(t - t0) / half_life) + weight`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub const MODEL_VERSION: &str = "v1";

/// Signals the model knows, as event types (`engagement.<type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    EmailOpen,
    EmailClick,
    PageView,
    PricingView,
    CalculatorUse,
    FormSubmit,
    ChatMessage,
    TestDriveRequest,
    /// Urgency words ("asap", "this week"...) found in forms, chat and notes.
    Urgency,
}

impl Signal {
    /// Every signal, in the order `leads.signal_state` stores them (`stored_signals`): append,
    /// never reorder, and name a new one in `lead_signal_rows` too.
    pub const ALL: [Signal; 9] = [
        Signal::EmailOpen,
        Signal::EmailClick,
        Signal::PageView,
        Signal::PricingView,
        Signal::CalculatorUse,
        Signal::FormSubmit,
        Signal::ChatMessage,
        Signal::TestDriveRequest,
        Signal::Urgency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::EmailOpen => "email_open",
            Signal::EmailClick => "email_click",
            Signal::PageView => "page_view",
            Signal::PricingView => "pricing_view",
            Signal::CalculatorUse => "calculator_use",
            Signal::FormSubmit => "form_submit",
            Signal::ChatMessage => "chat_message",
            Signal::TestDriveRequest => "test_drive_request",
            Signal::Urgency => "urgency",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Signal::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// (component, points per decayed unit, cap): each signal's share of its component.
    pub fn weight(self) -> (Component, f64, f64) {
        use Component::*;
        match self {
            Signal::EmailOpen => (Engagement, 2.0, 8.0),
            Signal::EmailClick => (Engagement, 4.0, 8.0),
            Signal::PageView => (Engagement, 1.5, 9.0),
            Signal::PricingView => (BuyingSignal, 4.0, 12.0),
            Signal::CalculatorUse => (BuyingSignal, 4.0, 8.0),
            Signal::FormSubmit => (BuyingSignal, 6.0, 6.0),
            Signal::ChatMessage => (BuyingSignal, 2.0, 4.0),
            Signal::TestDriveRequest => (BuyingSignal, 10.0, 10.0),
            Signal::Urgency => (BuyingSignal, 4.0, 8.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Engagement,
    BuyingSignal,
    Demographic,
}

/// Caps of the three components; they add up to 100.
pub const ENGAGEMENT_CAP: f64 = 35.0;
pub const BUYING_CAP: f64 = 40.0;
pub const DEMOGRAPHIC_CAP: f64 = 25.0;
/// Recency: full points for activity now, halving every `RECENCY_HALF_LIFE_DAYS`.
pub const RECENCY_POINTS: f64 = 10.0;
pub const RECENCY_HALF_LIFE_DAYS: f64 = 7.0;
pub const BUDGET_STATED_POINTS: f64 = 4.0;
pub const INTEREST_IN_STOCK_POINTS: f64 = 10.0;
pub const BUDGET_FITS_POINTS: f64 = 8.0;
pub const REPEAT_CUSTOMER_POINTS: f64 = 7.0;
/// A budget "fits" an item when it covers at least this share of its price.
pub const BUDGET_FIT_RATIO: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Half-life of an event's weight.
    pub half_life_days: f64,
    pub hot_threshold: i32,
    pub warm_threshold: i32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            half_life_days: 14.0,
            hot_threshold: 70,
            warm_threshold: 40,
        }
    }
}

/// A decayed running sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub value: f64,
    pub as_of: OffsetDateTime,
    /// Events folded in, undecayed (for confidence and insights).
    pub count: i64,
}

impl Running {
    /// The value carried forward to `at` (never into the past: a late event does not inflate it).
    pub fn at(&self, at: OffsetDateTime, half_life_days: f64) -> f64 {
        self.value * decay(at - self.as_of, half_life_days)
    }

    /// Folds in one event of weight 1 that happened at `occurred_at`.
    pub fn add(self, occurred_at: OffsetDateTime, half_life_days: f64) -> Running {
        if occurred_at >= self.as_of {
            Running {
                value: self.at(occurred_at, half_life_days) + 1.0,
                as_of: occurred_at,
                count: self.count + 1,
            }
        } else {
            // An older event arriving late: count it at its decayed weight as of now-stored time.
            Running {
                value: self.value + decay(self.as_of - occurred_at, half_life_days),
                as_of: self.as_of,
                count: self.count + 1,
            }
        }
    }

    pub fn first(occurred_at: OffsetDateTime) -> Running {
        Running {
            value: 1.0,
            as_of: occurred_at,
            count: 1,
        }
    }
}

/// 2^(-age / half_life); an age in the future counts as now.
pub fn decay(age: Duration, half_life_days: f64) -> f64 {
    let days = age.as_seconds_f64().max(0.0) / 86_400.0;
    if half_life_days <= 0.0 {
        return if days == 0.0 { 1.0 } else { 0.0 };
    }
    (-days / half_life_days).exp2()
}

/// What the model knows about a lead when it scores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub signals: BTreeMap<Signal, Running>,
    pub last_activity_at: Option<OffsetDateTime>,
    pub budget: Option<f64>,
    pub interest: Option<String>,
    pub timeline: Option<String>,
    pub has_email: bool,
    pub has_phone: bool,
    pub has_company: bool,
    pub repeat_customer: bool,
    /// Prices of in-stock inventory items matching the lead's interest.
    pub matching_prices: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// One line of "why": which signal gave how many points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub signal: String,
    pub component: Component,
    pub points: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsightKind {
    TalkingPoint,
    Concern,
    Opportunity,
}

impl InsightKind {
    /// The name `lead_insights.kind` stores, the same as serde's.
    pub fn as_str(self) -> &'static str {
        match self {
            InsightKind::TalkingPoint => "talking_point",
            InsightKind::Concern => "concern",
            InsightKind::Opportunity => "opportunity",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    pub kind: InsightKind,
    pub text: String,
    /// How much it matters, 0-1, for ordering.
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub total: i32,
    pub engagement: f64,
    pub buying_signal: f64,
    pub demographic: f64,
    pub tier: Tier,
    pub confidence: Confidence,
    pub confidence_value: f64,
    pub breakdown: Vec<Contribution>,
    pub insights: Vec<Insight>,
    pub model_version: &'static str,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Scores `inputs` as of `now`. Deterministic: the same inputs and `now` give the same score.
pub fn score(inputs: &Inputs, now: OffsetDateTime, config: &Config) -> Score {
    let mut breakdown = Vec::new();
    let mut engagement = 0.0;
    let mut buying = 0.0;
    let mut demographic = 0.0;

    if let Some(last) = inputs.last_activity_at {
        let points = RECENCY_POINTS * decay(now - last, RECENCY_HALF_LIFE_DAYS);
        engagement += points;
        let days = ((now - last).as_seconds_f64() / 86_400.0).max(0.0);
        breakdown.push(Contribution {
            signal: "recency".into(),
            component: Component::Engagement,
            points: round2(points),
            detail: format!("last activity {days:.0} days ago"),
        });
    }
    for (signal, running) in &inputs.signals {
        let (component, per_unit, cap) = signal.weight();
        let units = running.at(now, config.half_life_days);
        let points = (units * per_unit).min(cap);
        if points <= 0.0 {
            continue;
        }
        match component {
            Component::Engagement => engagement += points,
            Component::BuyingSignal => buying += points,
            Component::Demographic => demographic += points,
        }
        breakdown.push(Contribution {
            signal: signal.as_str().into(),
            component,
            points: round2(points),
            detail: format!("{} event(s), {units:.2} after decay", running.count),
        });
    }
    if inputs.budget.is_some_and(|b| b > 0.0) {
        buying += BUDGET_STATED_POINTS;
        breakdown.push(Contribution {
            signal: "budget_stated".into(),
            component: Component::BuyingSignal,
            points: BUDGET_STATED_POINTS,
            detail: "a budget is known".into(),
        });
    }
    if !inputs.matching_prices.is_empty() {
        demographic += INTEREST_IN_STOCK_POINTS;
        breakdown.push(Contribution {
            signal: "interest_in_stock".into(),
            component: Component::Demographic,
            points: INTEREST_IN_STOCK_POINTS,
            detail: format!("{} matching item(s) in stock", inputs.matching_prices.len()),
        });
        if let Some(budget) = inputs.budget
            && inputs
                .matching_prices
                .iter()
                .any(|price| budget >= price * BUDGET_FIT_RATIO)
        {
            demographic += BUDGET_FITS_POINTS;
            breakdown.push(Contribution {
                signal: "budget_fits".into(),
                component: Component::Demographic,
                points: BUDGET_FITS_POINTS,
                detail: "the budget covers a matching item".into(),
            });
        }
    }
    if inputs.repeat_customer {
        demographic += REPEAT_CUSTOMER_POINTS;
        breakdown.push(Contribution {
            signal: "repeat_customer".into(),
            component: Component::Demographic,
            points: REPEAT_CUSTOMER_POINTS,
            detail: "has bought before".into(),
        });
    }

    let engagement = engagement.clamp(0.0, ENGAGEMENT_CAP);
    let buying = buying.clamp(0.0, BUYING_CAP);
    let demographic = demographic.clamp(0.0, DEMOGRAPHIC_CAP);
    // Rounded once from the exact sum, so a tiny positive signal can never round the total down.
    let total = (engagement + buying + demographic)
        .round()
        .clamp(0.0, 100.0) as i32;
    let tier = if total >= config.hot_threshold {
        Tier::Hot
    } else if total >= config.warm_threshold {
        Tier::Warm
    } else {
        Tier::Cold
    };
    let (confidence, confidence_value) = confidence(inputs);
    let insights = insights(inputs, now, config, total);
    Score {
        total,
        engagement: round2(engagement),
        buying_signal: round2(buying),
        demographic: round2(demographic),
        tier,
        confidence,
        confidence_value,
        breakdown,
        insights,
        model_version: MODEL_VERSION,
    }
}

/// How much the score can be trusted: half from how complete the lead's data is, half from how
/// many signals it rests on.
fn confidence(inputs: &Inputs) -> (Confidence, f64) {
    let facts = [
        inputs.has_email,
        inputs.has_phone,
        inputs.has_company,
        inputs.budget.is_some(),
        inputs.interest.is_some(),
        inputs.timeline.is_some(),
    ];
    let data = facts.iter().filter(|known| **known).count() as f64 / facts.len() as f64;
    let events: i64 = inputs.signals.values().map(|r| r.count).sum();
    let evidence = (events as f64 / 10.0).min(1.0);
    let value = round2(0.5 * data + 0.5 * evidence);
    let level = if value >= 0.7 {
        Confidence::High
    } else if value >= 0.4 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    (level, value)
}

fn insights(inputs: &Inputs, now: OffsetDateTime, config: &Config, total: i32) -> Vec<Insight> {
    let mut out = Vec::new();
    let interest = inputs.interest.as_deref().unwrap_or("what they looked at");
    let count = |s: Signal| inputs.signals.get(&s).map_or(0, |r| r.count);
    let recent = |s: Signal| {
        inputs
            .signals
            .get(&s)
            .map_or(0.0, |r| r.at(now, config.half_life_days))
    };
    let mut push = |kind, text: String, score: f64| out.push(Insight { kind, text, score });

    if count(Signal::TestDriveRequest) > 0 {
        push(
            InsightKind::Opportunity,
            format!("Asked for a test drive: book it and bring the {interest}."),
            0.95,
        );
    }
    if recent(Signal::PricingView) >= 2.0 {
        push(
            InsightKind::TalkingPoint,
            format!(
                "Viewed pricing {} times: walk through financing and options for {interest}.",
                count(Signal::PricingView)
            ),
            0.9,
        );
    }
    if count(Signal::CalculatorUse) > 0 {
        push(
            InsightKind::TalkingPoint,
            "Used the payment calculator: have a monthly figure ready.".into(),
            0.8,
        );
    }
    if count(Signal::Urgency) > 0 {
        push(
            InsightKind::Opportunity,
            "Used urgent language: call today.".into(),
            0.85,
        );
    }
    if inputs.repeat_customer {
        push(
            InsightKind::Opportunity,
            "Repeat customer: mention loyalty terms and their last purchase.".into(),
            0.6,
        );
    }
    if let Some(timeline) = &inputs.timeline {
        push(
            InsightKind::TalkingPoint,
            format!("Stated timeline: {timeline}."),
            0.5,
        );
    }
    if inputs.interest.is_some() && inputs.matching_prices.is_empty() {
        push(
            InsightKind::Concern,
            format!("Nothing matching {interest} is in stock: offer an alternative or an order."),
            0.7,
        );
    }
    if let (Some(budget), Some(cheapest)) = (
        inputs.budget,
        inputs.matching_prices.iter().copied().reduce(f64::min),
    ) && budget < cheapest * BUDGET_FIT_RATIO
    {
        push(
            InsightKind::Concern,
            format!(
                "Budget {budget:.0} is below the cheapest match ({cheapest:.0}): discuss financing or a used model."
            ),
            0.75,
        );
    }
    match inputs.last_activity_at {
        Some(last) if (now - last) > Duration::days(21) => push(
            InsightKind::Concern,
            format!(
                "No activity for {} days: re-engage before it goes cold.",
                (now - last).whole_days()
            ),
            0.65,
        ),
        None => push(
            InsightKind::Concern,
            "No engagement yet: send something worth opening.".into(),
            0.4,
        ),
        _ => {}
    }
    if total >= config.hot_threshold {
        push(
            InsightKind::Opportunity,
            "Hot lead: contact within the hour.".into(),
            1.0,
        );
    }
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.text.cmp(&b.text))
    });
    out
}

/// Urgency words found in free text (forms, chat, notes); each counts once per text.
pub fn urgency_words(text: &str) -> usize {
    const WORDS: [&str; 10] = [
        "asap",
        "urgent",
        "urgently",
        "today",
        "this week",
        "right away",
        "immediately",
        "as soon as possible",
        "need it now",
        "by friday",
    ];
    let lowered = text.to_lowercase();
    WORDS.iter().filter(|w| lowered.contains(*w)).count()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn insight_kinds_are_stored_under_their_serde_names() {
        for kind in [
            InsightKind::TalkingPoint,
            InsightKind::Concern,
            InsightKind::Opportunity,
        ] {
            assert_eq!(serde_json::to_value(kind).ok(), Some(kind.as_str().into()));
        }
    }

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    fn with(signal: Signal, events: &[i64]) -> Inputs {
        let mut inputs = Inputs {
            last_activity_at: Some(NOW),
            ..Inputs::default()
        };
        let mut running: Option<Running> = None;
        for days_ago in events {
            let at = NOW - Duration::days(*days_ago);
            running = Some(match running {
                None => Running::first(at),
                Some(r) => r.add(at, 14.0),
            });
        }
        if let Some(r) = running {
            inputs.signals.insert(signal, r);
        }
        inputs
    }

    fn arb_inputs() -> impl Strategy<Value = Inputs> {
        (
            proptest::collection::btree_map(
                0usize..Signal::ALL.len(),
                (0.0f64..50.0, 0i64..400, 0i64..50),
                0..9,
            ),
            proptest::option::of(0i64..400),
            proptest::option::of(0.0f64..200_000.0),
            any::<(bool, bool, bool, bool)>(),
            proptest::collection::vec(1_000.0f64..100_000.0, 0..4),
        )
            .prop_map(
                |(signals, last_days, budget, (email, phone, company, repeat), prices)| Inputs {
                    signals: signals
                        .into_iter()
                        .map(|(i, (value, days_ago, count))| {
                            (
                                Signal::ALL[i],
                                Running {
                                    value,
                                    as_of: NOW - Duration::days(days_ago),
                                    count,
                                },
                            )
                        })
                        .collect(),
                    last_activity_at: last_days.map(|d| NOW - Duration::days(d)),
                    budget,
                    interest: Some("suv".into()),
                    timeline: None,
                    has_email: email,
                    has_phone: phone,
                    has_company: company,
                    repeat_customer: repeat,
                    matching_prices: prices,
                },
            )
    }

    proptest! {
        #[test]
        fn scores_are_bounded_and_each_component_within_its_cap(inputs in arb_inputs()) {
            let s = score(&inputs, NOW, &Config::default());
            prop_assert!((0..=100).contains(&s.total));
            prop_assert!((0.0..=ENGAGEMENT_CAP).contains(&s.engagement));
            prop_assert!((0.0..=BUYING_CAP).contains(&s.buying_signal));
            prop_assert!((0.0..=DEMOGRAPHIC_CAP).contains(&s.demographic));
            prop_assert!((0.0..=1.0).contains(&s.confidence_value));
        }

        #[test]
        fn the_same_inputs_give_the_same_score(inputs in arb_inputs()) {
            prop_assert_eq!(score(&inputs, NOW, &Config::default()), score(&inputs, NOW, &Config::default()));
        }

        #[test]
        fn a_positive_signal_never_lowers_the_score(inputs in arb_inputs(), which in 0usize..Signal::ALL.len(), days_ago in 0i64..100) {
            let before = score(&inputs, NOW, &Config::default());
            let mut more = inputs.clone();
            let at = NOW - Duration::days(days_ago);
            let signal = Signal::ALL[which];
            let updated = match more.signals.get(&signal) {
                Some(r) => r.add(at, 14.0),
                None => Running::first(at),
            };
            more.signals.insert(signal, updated);
            let after = score(&more, NOW, &Config::default());
            prop_assert!(after.total >= before.total, "{} -> {}", before.total, after.total);
            prop_assert!(after.engagement >= before.engagement && after.buying_signal >= before.buying_signal);
        }

        #[test]
        fn an_older_signal_counts_less_than_the_same_signal_now(which in 0usize..Signal::ALL.len(), days_ago in 1i64..365) {
            let signal = Signal::ALL[which];
            let now = score(&with(signal, &[0]), NOW, &Config::default());
            let old = score(&with(signal, &[days_ago]), NOW, &Config::default());
            let points = |s: &Score| s.breakdown.iter().find(|c| c.signal == signal.as_str()).map_or(0.0, |c| c.points);
            prop_assert!(points(&old) < points(&now), "{} vs {}", points(&old), points(&now));
            prop_assert!(old.total <= now.total);
        }
    }

    #[test]
    fn decay_carried_forward_equals_decay_from_scratch() {
        let a = NOW - Duration::days(30);
        let b = NOW - Duration::days(10);
        let running = Running::first(a).add(b, 14.0);
        let direct = decay(NOW - a, 14.0) + decay(NOW - b, 14.0);
        assert!((running.at(NOW, 14.0) - direct).abs() < 1e-9);
        let late = Running::first(b).add(a, 14.0);
        assert!(
            (late.at(NOW, 14.0) - direct).abs() < 1e-9,
            "order of arrival does not matter"
        );
    }

    #[test]
    fn tiers_follow_the_configured_thresholds() {
        let mut inputs = with(Signal::TestDriveRequest, &[0]);
        inputs.signals.insert(
            Signal::PricingView,
            Running {
                value: 3.0,
                as_of: NOW,
                count: 3,
            },
        );
        inputs.signals.insert(
            Signal::CalculatorUse,
            Running {
                value: 2.0,
                as_of: NOW,
                count: 2,
            },
        );
        inputs.signals.insert(
            Signal::EmailClick,
            Running {
                value: 2.0,
                as_of: NOW,
                count: 2,
            },
        );
        inputs.budget = Some(50_000.0);
        inputs.matching_prices = vec![45_000.0];
        inputs.repeat_customer = true;
        let s = score(&inputs, NOW, &Config::default());
        assert_eq!(s.tier, Tier::Hot, "{s:?}");
        let strict = Config {
            hot_threshold: 101,
            ..Config::default()
        };
        assert_eq!(score(&inputs, NOW, &strict).tier, Tier::Warm);
        assert!(s.insights.iter().any(|i| i.text.contains("test drive")));
        assert!(s.breakdown.iter().any(|c| c.signal == "budget_fits"));
        assert_eq!(
            score(&Inputs::default(), NOW, &Config::default()).tier,
            Tier::Cold
        );
    }

    #[test]
    fn urgency_words_are_found_in_free_text() {
        assert_eq!(urgency_words("Need it ASAP, ideally this week"), 2);
        assert_eq!(urgency_words("just browsing"), 0);
    }
}
