//! `leadflow demo`: the four users the original system shipped with, a few hundred realistic
//! leads and the dealership inventory they are interested in, so a newcomer sees a living system.
//! Leads go through the same code as the API (audit rows and `leads.created` events included),
//! so the scorer scores them as soon as it runs.

use std::net::{IpAddr, Ipv4Addr};

use rand::{Rng as _, RngCore as _, seq::IndexedRandom as _};
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    admin::{NewAdmin, upsert_admin},
    auth::password,
    extract::Meta,
    leads::{
        insert_lead,
        model::{LeadStatus, NewLead},
    },
    policy::{Actor, Role},
};

pub struct DemoUser {
    pub email: String,
    pub role: &'static str,
    pub password: String,
}

pub struct DemoReport {
    pub users: Vec<DemoUser>,
    pub leads: usize,
    pub items: usize,
}

const FIRST: [&str; 24] = [
    "Ava", "Liam", "Mia", "Noah", "Zoe", "Ethan", "Isla", "Lucas", "Maya", "Omar", "Priya",
    "Jonas", "Sofia", "Mateo", "Hana", "Kofi", "Elena", "Ravi", "Chloe", "Diego", "Amara", "Felix",
    "Nina", "Yusuf",
];
const LAST: [&str; 24] = [
    "Nguyen", "Smith", "Garcia", "Müller", "Okafor", "Rossi", "Kowalski", "Tanaka", "Silva",
    "Patel", "Johnson", "Haddad", "Larsen", "Dubois", "Kim", "Novak", "Ibrahim", "Costa",
    "Schmidt", "Lopez", "Andersen", "Moreau", "Brown", "Sato",
];
const COMPANIES: [&str; 12] = [
    "Northwind Logistics",
    "Bluebird Bakery",
    "Summit Dental",
    "Harbor Realty",
    "Greenline Landscaping",
    "Atlas Consulting",
    "Pine & Co",
    "Riverside Clinic",
    "Metro Couriers",
    "Brightside Solar",
    "",
    "",
];
const SOURCES: [&str; 6] = [
    "website",
    "referral",
    "walk_in",
    "email_campaign",
    "trade_show",
    "phone",
];
const TIMELINES: [&str; 5] = [
    "this week",
    "this month",
    "next quarter",
    "this year",
    "just browsing",
];
/// (name, category, price, quantity)
const INVENTORY: [(&str, &str, f64, i32); 14] = [
    ("Aurora EV Compact", "ev", 31_900.0, 6),
    ("Aurora EV Long Range", "ev", 44_500.0, 3),
    ("Voltra e-SUV", "ev", 52_000.0, 0),
    ("Terrain 4x4", "suv", 46_800.0, 4),
    ("Urban Crossover", "suv", 33_200.0, 9),
    ("Family Seven", "suv", 39_900.0, 2),
    ("Metro Hatch", "hatchback", 19_500.0, 12),
    ("Metro Hatch Sport", "hatchback", 24_300.0, 5),
    ("Executive Sedan", "sedan", 58_700.0, 2),
    ("Commuter Sedan", "sedan", 27_400.0, 8),
    ("Workhorse Pickup", "truck", 49_900.0, 3),
    ("Cargo Van", "van", 41_200.0, 4),
    ("Roadster", "sports", 67_000.0, 1),
    ("Certified Pre-Owned Sedan", "sedan", 16_900.0, 7),
];

fn password_for_demo() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

async fn upsert_user(
    pool: &PgPool,
    email: &str,
    name: &str,
    role: Role,
    plain: &str,
) -> anyhow::Result<Uuid> {
    let hash = password::hash(SecretString::from(plain.to_owned())).await?;
    let id = sqlx::query_scalar(
        "insert into users (email, name, password_hash, role) values ($1, $2, $3, $4)
         on conflict (email) do update set password_hash = excluded.password_hash, role = excluded.role, active = true
         returning id",
    )
    .bind(email)
    .bind(name)
    .bind(hash)
    .bind(role.as_str())
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Seeds (or re-seeds: users get new passwords, leads are added) the demo data.
pub async fn seed(pool: &PgPool, leads: usize) -> anyhow::Result<DemoReport> {
    let mut users = Vec::new();
    let admin_password = password_for_demo();
    let admin_id = upsert_admin(
        pool,
        &NewAdmin::parse(
            "admin@leadflow.local",
            SecretString::from(admin_password.clone()),
            "Admin",
        )?,
    )
    .await?;
    users.push(DemoUser {
        email: "admin@leadflow.local".into(),
        role: "admin",
        password: admin_password,
    });
    let mut reps = Vec::new();
    for (email, name, role) in [
        ("manager@leadflow.local", "Morgan Manager", Role::Manager),
        ("rep1@leadflow.local", "Riley Rep", Role::SalesRep),
        ("rep2@leadflow.local", "Sam Rep", Role::SalesRep),
    ] {
        let plain = password_for_demo();
        let id = upsert_user(pool, email, name, role, &plain).await?;
        if role == Role::SalesRep {
            reps.push(id);
        }
        users.push(DemoUser {
            email: email.into(),
            role: role.as_str(),
            password: plain,
        });
    }

    let mut tx = pool.begin().await?;
    let existing: i64 = sqlx::query_scalar("select count(*) from inventory_items")
        .fetch_one(&mut *tx)
        .await?;
    if existing == 0 {
        for (name, category, price, quantity) in INVENTORY {
            sqlx::query("insert into inventory_items (name, category, price, quantity) values ($1, $2, $3::float8::numeric, $4)")
                .bind(name)
                .bind(category)
                .bind(price)
                .bind(quantity)
                .execute(&mut *tx)
                .await?;
        }
    }

    let admin = Actor {
        id: admin_id,
        role: Role::Admin,
    };
    let meta = Meta {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        user_agent: Some("leadflow demo".into()),
        request_id: None,
    };
    let mut rng = rand::rng();
    let statuses = [
        LeadStatus::New,
        LeadStatus::New,
        LeadStatus::Contacted,
        LeadStatus::Qualified,
        LeadStatus::Won,
        LeadStatus::Lost,
    ];
    for n in 0..leads {
        let first = FIRST.choose(&mut rng).copied().unwrap_or("Alex");
        let last = LAST.choose(&mut rng).copied().unwrap_or("Doe");
        let company = COMPANIES.choose(&mut rng).copied().unwrap_or("");
        let (item, category, price, _) =
            INVENTORY.choose(&mut rng).copied().unwrap_or(INVENTORY[0]);
        let budget = (price * rng.random_range(0.6..1.3) / 100.0).round() * 100.0;
        let lead = NewLead {
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            email: Some(format!(
                "{}.{}{n}@example.com",
                first.to_lowercase(),
                last.to_lowercase().replace('ü', "u")
            )),
            phone: Some(format!("+1 555 {:04}", rng.random_range(0..10_000))),
            company: (!company.is_empty()).then(|| company.to_owned()),
            source: SOURCES.choose(&mut rng).map(|s| (*s).to_owned()),
            status: statuses.choose(&mut rng).copied(),
            budget: rng.random_bool(0.8).then_some(budget),
            interest: Some(format!("{item} ({category})")),
            timeline: TIMELINES.choose(&mut rng).map(|s| (*s).to_owned()),
            tags: Some(vec![category.to_owned()]),
            repeat_customer: Some(rng.random_bool(0.15)),
            owner_id: reps
                .choose(&mut rng)
                .copied()
                .filter(|_| rng.random_bool(0.7)),
            ..NewLead::default()
        };
        insert_lead(&mut tx, &admin, &meta, lead.validate()?).await?;
    }
    tx.commit().await?;
    Ok(DemoReport {
        users,
        leads,
        items: INVENTORY.len(),
    })
}
