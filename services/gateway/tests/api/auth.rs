use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, PASSWORD, TestApp};

#[tokio::test]
async fn register_signs_the_new_sales_rep_in_and_a_taken_email_is_a_conflict() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "New.Rep@Example.com", "password": "violet-harbour-engine", "name": "New Rep"});
    let (status, session) = app
        .call("POST", "/api/auth/register", None, Some(body.clone()))
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["token_type"], "bearer");
    assert_eq!(session["user"]["role"], "sales_rep");
    assert_eq!(session["user"]["email"], "new.rep@example.com");
    assert!(session["expires_in"].as_u64().expect("expires_in") > 0);
    assert!(session["refresh_token"].as_str().is_some());
    let token = session["access_token"].as_str().expect("token");
    let (status, me) = app.call("GET", "/api/auth/me", Some(token), None).await;
    assert_eq!(
        (status, me["email"].clone()),
        (200, json!("new.rep@example.com"))
    );

    let (status, problem) = app
        .call("POST", "/api/auth/register", None, Some(body))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(app.count("select count(*) from users").await, 1);

    let (status, problem) = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": "x@example.com", "password": "Password123", "name": "X"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "password");
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .expect("detail")
            .contains("common")
    );
    app.stop().await;
}

#[tokio::test]
async fn registration_can_be_closed() {
    let app = TestApp::spawn_with(&["--registration", "closed"]).await;
    let (status, problem) = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(
                json!({"email": "a@example.com", "password": "violet-harbour-engine", "name": "A"}),
            ),
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(app.count("select count(*) from users").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_at_owasp_parameters() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(
                json!({"email": "h@example.com", "password": "violet-harbour-engine", "name": "H"}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    let hash: String =
        sqlx::query_scalar("select password_hash from users where email = 'h@example.com'")
            .fetch_one(&app.pool)
            .await
            .expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains("violet"));
    app.stop().await;
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer_and_both_are_audited() {
    let app = TestApp::spawn().await;
    let user = app.user("sales_rep").await;
    let (s1, wrong) = app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": user.email, "password": "not-the-password"})),
        )
        .await;
    let (s2, unknown) = app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "ghost@example.com", "password": "not-the-password"})),
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown);
    assert_eq!(
        app.count("select count(*) from audit_log where action = 'auth.login' and not success")
            .await,
        2
    );
    assert_eq!(
        app.count("select count(*) from audit_log where action = 'auth.login' and success")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_signs_out_the_whole_family() {
    let app = TestApp::spawn().await;
    let user = app.user("sales_rep").await;
    let (status, second) = refresh(&app, &user.refresh).await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(second_refresh, user.refresh);
    let (status, third) = refresh(&app, &second_refresh).await;
    assert_eq!(status, 200);
    let third_refresh = third["refresh_token"].as_str().expect("rotated").to_owned();

    // An attacker replays the first token: it fails, and so does the legitimate latest one.
    let (status, _) = refresh(&app, &user.refresh).await;
    assert_eq!(status, 401);
    let (status, _) = refresh(&app, &third_refresh).await;
    assert_eq!(status, 401, "the family is revoked");
    assert!(
        app.count("select count(*) from audit_log where action = 'auth.refresh_reuse'")
            .await
            >= 1
    );

    let (status, _) = refresh(&app, "made-up").await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::spawn().await;
    let user = app.user("manager").await;
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/logout",
            None,
            Some(json!({"refresh_token": user.refresh})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = refresh(&app, &user.refresh).await;
    assert_eq!(status, 401);
    app.stop().await;
}

/// Ending a sign-in (sign-out, or a replayed token) writes only the family's live tokens: a
/// rotated token keeps the moment it was revoked and is not written, nor locked, again. Before,
/// every token of the family was rewritten each time, and a long-lived sign-in has one per
/// access-token lifetime; the expired-token sweep, which deletes old ones, could deadlock with it.
#[tokio::test]
async fn ending_a_sign_in_writes_only_its_live_tokens() {
    let app = TestApp::spawn().await;
    let user = app.user("manager").await;
    let rows = |app: &TestApp| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, String, Option<time::OffsetDateTime>)>(
                "select id, xmin::text, revoked_at from refresh_tokens order by created_at, id",
            )
            .fetch_all(&pool)
            .await
            .expect("tokens")
        }
    };
    let mut latest = user.refresh.clone();
    for _ in 0..2 {
        let (status, rotated) = refresh(&app, &latest).await;
        assert_eq!(status, 200, "{rotated}");
        latest = rotated["refresh_token"]
            .as_str()
            .expect("rotated")
            .to_owned();
    }
    let before = rows(&app).await;
    assert_eq!(before.len(), 3);
    assert!(before[2].2.is_none(), "the latest is live");

    let (status, _) = logout(&app, &latest).await;
    assert_eq!(status, 204);
    let after = rows(&app).await;
    assert_eq!(
        after[..2],
        before[..2],
        "rotated tokens are not written again"
    );
    assert!(after[2].2.is_some(), "the live one is revoked");
    let (status, _) = refresh(&app, &latest).await;
    assert_eq!(status, 401);
    let (status, _) = logout(&app, &latest).await;
    assert_eq!(
        status, 204,
        "signing out of an ended sign-in still succeeds"
    );
    assert_eq!(rows(&app).await, after, "and writes nothing");

    // A replayed token ends the family the same way.
    let (status, session) = login(&app, &user.email).await;
    assert_eq!(status, 200, "{session}");
    let first = session["refresh_token"].as_str().expect("token").to_owned();
    let (status, rotated) = refresh(&app, &first).await;
    assert_eq!(status, 200, "{rotated}");
    let before = rows(&app).await;
    let (status, _) = refresh(&app, &first).await;
    assert_eq!(status, 401, "replayed");
    let after = rows(&app).await;
    assert_eq!(
        after[..4],
        before[..4],
        "the first sign-in's and the replayed token's rows stay"
    );
    assert!(
        before[4].2.is_none() && after[4].2.is_some(),
        "the live one is revoked"
    );
    app.stop().await;
}

/// A sign-out that meets a refresh of the same sign-in in flight waits for it, and ends the token
/// that refresh makes too. In one statement the update's snapshot, taken before the refresh
/// committed, did not see the new token, which stayed live after a sign-out answered 204.
#[tokio::test]
async fn a_sign_out_during_a_refresh_also_ends_the_token_the_refresh_makes() {
    let app = TestApp::spawn().await;
    let user = app.user("manager").await;
    let status = during_a_refresh(&app, user.id, logout(&app, &user.refresh)).await;
    assert_eq!(status, 204);
    app.stop().await;
}

/// The same for a password reset, which ends every sign-in of the user: a refresh in flight must
/// not leave a sign-in that outlives the reset. Here the reset first waits on the user's row,
/// which the refresh's new token holds (its foreign key), and then on nothing more; the test
/// keeps that so, whichever lock does it.
#[tokio::test]
async fn a_password_reset_during_a_refresh_also_ends_the_token_the_refresh_makes() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let user = app.user("manager").await;
    let path = format!("/api/users/{}", user.id);
    let reset = app.call(
        "PATCH",
        &path,
        Some(&admin.token),
        Some(json!({"password": "a-new-password-for-them"})),
    );
    let status = during_a_refresh(&app, user.id, reset).await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// Runs `ending` (a request that ends `user`'s sign-in) while a refresh of that sign-in is in
/// flight, as `refresh` makes it: the live token locked, its successor inserted, the token revoked,
/// not yet committed. The refresh commits once `ending` waits on its lock. Asserts the successor
/// ended too, and returns `ending`'s status.
async fn during_a_refresh(
    app: &TestApp,
    user: uuid::Uuid,
    ending: impl std::future::Future<Output = (u16, Value)>,
) -> u16 {
    let mut refreshing = app.pool.begin().await.expect("begin");
    let (token, family): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "select id, family_id from refresh_tokens where user_id = $1 and revoked_at is null for update",
    )
    .bind(user)
    .fetch_one(&mut *refreshing)
    .await
    .expect("the live token");
    let successor: uuid::Uuid = sqlx::query_scalar(
        "insert into refresh_tokens (user_id, token_hash, family_id, expires_at)
         values ($1, sha256(gen_random_uuid()::text::bytea), $2, now() + interval '1 day') returning id",
    )
    .bind(user)
    .bind(family)
    .fetch_one(&mut *refreshing)
    .await
    .expect("successor");
    sqlx::query("update refresh_tokens set revoked_at = now(), replaced_by = $2 where id = $1")
        .bind(token)
        .bind(successor)
        .execute(&mut *refreshing)
        .await
        .expect("rotate");

    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("activity")
    };
    let ((status, _), ()) = tokio::join!(ending, async {
        leadflow_testkit::eventually(
            Duration::from_secs(10),
            "the request to wait for the refresh",
            || async { (waiting().await > 0).then_some(()) },
        )
        .await;
        refreshing.commit().await.expect("the refresh commits");
    });
    let ended: Option<time::OffsetDateTime> =
        sqlx::query_scalar("select revoked_at from refresh_tokens where id = $1")
            .bind(successor)
            .fetch_one(&app.pool)
            .await
            .expect("successor");
    assert!(ended.is_some(), "the token the refresh made is ended too");
    status
}

/// `POST /api/auth/login` with the test users' password.
async fn login(app: &TestApp, email: &str) -> (u16, Value) {
    app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({ "email": email, "password": PASSWORD })),
    )
    .await
}

/// `POST /api/auth/logout` with `token`.
async fn logout(app: &TestApp, token: &str) -> (u16, Value) {
    app.call(
        "POST",
        "/api/auth/logout",
        None,
        Some(json!({ "refresh_token": token })),
    )
    .await
}

/// `POST /api/auth/refresh` with `token`.
async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({ "refresh_token": token })),
    )
    .await
}

/// A token's hash, how long ago it expired, and the hash of the token it was rotated into.
type ExpiredToken = (&'static [u8], &'static str, Option<&'static [u8]>);

#[tokio::test]
async fn refresh_tokens_long_past_their_expiry_are_deleted_and_live_ones_kept() {
    let app = TestApp::spawn().await;
    let user = app.user("manager").await;
    // "old" and "older" are a sign-in rotated twice, long expired. "kept" was rotated into
    // "short", which expired first (the lifetime was shortened since): deleting "short" would make
    // "kept" look like the last token of an ended sign-in, so it stays while "kept" does.
    let tokens: [ExpiredToken; 5] = [
        (b"older", "4 days", Some(b"old")),
        (b"old", "3 days", None),
        (b"kept", "1 hour", Some(b"short")),
        (b"short", "3 days", None),
        (b"just", "1 hour", None),
    ];
    for (hash, expired_for, _) in tokens.iter().rev() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into refresh_tokens (user_id, token_hash, family_id, expires_at, revoked_at)
             values ($1, $2, gen_random_uuid(), now() - interval '{expired_for}', now() - interval '5 days')"
        )))
        .bind(user.id)
        .bind(*hash)
        .execute(&app.pool)
        .await
        .expect("an expired token");
    }
    for (hash, _, successor) in tokens {
        sqlx::query(
            "update refresh_tokens set replaced_by = (select id from refresh_tokens where token_hash = $2)
             where token_hash = $1",
        )
        .bind(hash)
        .bind(successor)
        .execute(&app.pool)
        .await
        .expect("the chain");
    }

    // The gateway's own sweep may have run meanwhile: what is left is what counts.
    leadflow_gateway::auth::expired::delete_expired(&app.pool)
        .await
        .expect("sweep");
    let left: Vec<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "select r.token_hash, s.token_hash from refresh_tokens r
         left join refresh_tokens s on s.id = r.replaced_by
         where r.expires_at < now() order by r.token_hash",
    )
    .fetch_all(&app.pool)
    .await
    .expect("expired tokens");
    assert_eq!(
        left,
        [
            (b"just".to_vec(), None),
            (b"kept".to_vec(), Some(b"short".to_vec())),
            (b"short".to_vec(), None),
        ],
        "the long-expired chain is gone; a token still pointed at stays"
    );
    let (status, _) = refresh(&app, &user.refresh).await;
    assert_eq!(status, 200, "a live sign-in is untouched");
    app.stop().await;
}

fn forge(claims: Value, key: &[u8], alg: Algorithm) -> String {
    forge_with(Header::new(alg), claims, &EncodingKey::from_secret(key))
}

fn forge_with(header: Header, claims: Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, &claims, key).expect("encode")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header, HMAC-SHA256-signed with `key` whatever the header claims.
fn hmac_signed(header: &str, claims: &Value, key: &[u8]) -> String {
    use hmac::Mac as _;
    let input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Where a bad credential is presented.
enum Probe {
    /// `Authorization: Bearer` on `GET /api/auth/me`.
    Access(String),
    /// `POST /api/auth/refresh`.
    Refresh(String),
}

#[tokio::test]
async fn every_kind_of_forged_expired_revoked_or_misused_token_gets_a_401_problem() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let rep = app.user("sales_rep").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |overrides: Value| {
        let mut base = json!({"iss": "leadflow", "aud": "leadflow-api", "sub": admin.id, "role": "admin",
                              "iat": now, "nbf": now, "exp": now + 600, "jti": uuid::Uuid::new_v4()});
        for (k, v) in overrides.as_object().expect("object") {
            if v.is_null() {
                base.as_object_mut().expect("object").remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let secret = JWT_SECRET.as_bytes();
    let hs256 = |overrides: Value| forge(claims(overrides), secret, Algorithm::HS256);
    let valid = hs256(json!({}));
    let (status, _) = app.call("GET", "/api/auth/me", Some(&valid), None).await;
    assert_eq!(status, 200, "the forging itself is right");
    let (signing_input, signature) = valid.rsplit_once('.').expect("three parts");

    // RS256 with a key the attacker made: a server that let the header pick the algorithm
    // would verify it with whatever key the header points at.
    let attacker =
        EncodingKey::from_rsa_pem(include_bytes!("fixtures/attacker_rsa.pem")).expect("an RSA key");
    // The rep's genuine token with the payload swapped for one that says admin.
    let tampered_payload = {
        let parts: Vec<&str> = rep.token.split('.').collect();
        let payload = claims(json!({"sub": rep.id}));
        format!(
            "{}.{}.{}",
            parts[0],
            b64(payload.to_string().as_bytes()),
            parts[2]
        )
    };

    // A deactivated user's token, a signed-out sign-in's token, and the tokens of a sign-in
    // revoked because its refresh token was replayed.
    let deactivated = app.user("sales_rep").await;
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/api/users/{}", deactivated.id),
            Some(&admin.token),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);
    let signed_out = app.user("manager").await;
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/logout",
            None,
            Some(json!({"refresh_token": signed_out.refresh})),
        )
        .await;
    assert_eq!(status, 204);
    let replayed = app.user("sales_rep").await;
    let (status, rotated) = refresh(&app, &replayed.refresh).await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_access = rotated["access_token"].as_str().expect("access").to_owned();
    let (status, _) = app
        .call("GET", "/api/auth/me", Some(&rotated_access), None)
        .await;
    assert_eq!(status, 200, "rotation keeps the sign-in");

    let cases = [
        (
            "alg: none",
            Probe::Access(format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims(json!({})).to_string().as_bytes())
            )),
        ),
        (
            "wrong key",
            Probe::Access(forge(
                claims(json!({})),
                b"another-secret-that-is-long-enough-0000",
                Algorithm::HS256,
            )),
        ),
        (
            "wrong aud",
            Probe::Access(hs256(json!({"aud": "someone-else"}))),
        ),
        ("wrong iss", Probe::Access(hs256(json!({"iss": "evil"})))),
        (
            "expired",
            Probe::Access(hs256(
                json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000}),
            )),
        ),
        (
            "not yet valid (nbf in the future)",
            Probe::Access(hs256(json!({"nbf": now + 3600}))),
        ),
        (
            "issued in the future (iat)",
            Probe::Access(hs256(json!({"iat": now + 3600}))),
        ),
        (
            "key confusion: RS256 header, HMAC-signed with our secret",
            Probe::Access(hmac_signed(
                r#"{"alg":"RS256","typ":"JWT"}"#,
                &claims(json!({})),
                secret,
            )),
        ),
        (
            "key confusion: RS256 signed with an attacker's RSA key",
            Probe::Access(forge_with(
                Header::new(Algorithm::RS256),
                claims(json!({})),
                &attacker,
            )),
        ),
        (
            "algorithm substitution: HS512 with our secret",
            Probe::Access(forge(claims(json!({})), secret, Algorithm::HS512)),
        ),
        (
            "truncated signature",
            Probe::Access(format!(
                "{signing_input}.{}",
                &signature[..signature.len() - 6]
            )),
        ),
        ("no signature", Probe::Access(format!("{signing_input}."))),
        ("tampered signature", Probe::Access(format!("{valid}x"))),
        (
            "tampered payload (a sales rep's token made admin)",
            Probe::Access(tampered_payload),
        ),
        ("missing sub", Probe::Access(hs256(json!({"sub": null})))),
        (
            "sub not a user id",
            Probe::Access(hs256(json!({"sub": "admin"}))),
        ),
        (
            "unknown user",
            Probe::Access(hs256(json!({"sub": uuid::Uuid::new_v4()}))),
        ),
        (
            "unknown kid",
            Probe::Access(forge_with(
                Header {
                    kid: Some("attacker-key-1".into()),
                    ..Header::new(Algorithm::HS256)
                },
                claims(json!({})),
                &EncodingKey::from_secret(secret),
            )),
        ),
        (
            "jku header pointing at someone else's keys",
            Probe::Access(forge_with(
                Header {
                    jku: Some("https://evil.example/jwks.json".into()),
                    ..Header::new(Algorithm::HS256)
                },
                claims(json!({})),
                &EncodingKey::from_secret(secret),
            )),
        ),
        ("missing exp", Probe::Access(hs256(json!({"exp": null})))),
        ("missing aud", Probe::Access(hs256(json!({"aud": null})))),
        (
            "unknown role",
            Probe::Access(hs256(json!({"role": "root"}))),
        ),
        ("garbage", Probe::Access("not.a.token".to_owned())),
        ("empty bearer", Probe::Access(String::new())),
        (
            "refresh token used as access token",
            Probe::Access(rep.refresh.clone()),
        ),
        ("deactivated user", Probe::Access(deactivated.token.clone())),
        (
            "access token after logout",
            Probe::Access(signed_out.token.clone()),
        ),
        // Probed in this order: the replay revokes the sign-in, then its access tokens fail.
        (
            "reused refresh token",
            Probe::Refresh(replayed.refresh.clone()),
        ),
        (
            "access token of a sign-in revoked for refresh-token reuse",
            Probe::Access(rotated_access.clone()),
        ),
        (
            "first access token of a sign-in revoked for refresh-token reuse",
            Probe::Access(replayed.token.clone()),
        ),
        (
            "refresh token after logout",
            Probe::Refresh(signed_out.refresh.clone()),
        ),
        (
            "access token used as refresh token",
            Probe::Refresh(admin.token.clone()),
        ),
        (
            "made-up refresh token",
            Probe::Refresh("made-up".to_owned()),
        ),
    ];
    let mut names = std::collections::HashSet::new();
    for (name, probe) in cases {
        assert!(names.insert(name), "{name} is listed twice");
        let request = match &probe {
            Probe::Access(token) => app
                .client
                .get(app.url("/api/auth/me"))
                .header("authorization", format!("Bearer {token}")),
            Probe::Refresh(token) => app
                .client
                .post(app.url("/api/auth/refresh"))
                .json(&json!({"refresh_token": token})),
        };
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.expect("body");
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(content_type, "application/problem+json", "{name}");
        let problem: Value = serde_json::from_str(&body).expect("JSON problem");
        assert_eq!(problem["status"], 401, "{name}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.len() > 10),
            "{name}: {problem}"
        );
    }
    assert!(names.len() >= 15);
    let (status, _) = app.call("GET", "/api/auth/me", None, None).await;
    assert_eq!(status, 401, "anonymous");
    let (status, _) = app
        .call("GET", "/api/auth/me", Some(&admin.token), None)
        .await;
    assert_eq!(status, 200, "other sign-ins are untouched");
    app.stop().await;
}

#[tokio::test]
async fn guessing_one_accounts_password_is_rate_limited_and_the_owner_gets_in_after_the_window() {
    // Three attempts, one back every 4 s: long enough that a loaded machine's slow argon2 checks
    // do not refill the bucket mid-test, short enough to wait out.
    let app = TestApp::spawn_with(&["--login-rate-per-account", "3/12s"]).await;
    let user = app.user("sales_rep").await; // one attempt used
    let mut limited = None;
    for attempt in 1..=10 {
        let response = app
            .client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": user.email, "password": format!("guess-number-{attempt}")}))
            .send()
            .await
            .expect("request");
        if response.status() == 429 {
            limited = Some(
                response.headers()["retry-after"]
                    .to_str()
                    .expect("retry-after")
                    .parse::<u64>()
                    .expect("seconds"),
            );
            break;
        }
        assert_eq!(response.status(), 401);
    }
    let retry_after = limited.expect("429 within 10 tries");
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    let (status, _) = login(&app, &user.email).await;
    assert_eq!(status, 429, "even the right password waits out the window");
    assert!(
        app.count("select count(*) from audit_log where details->>'outcome' = 'rate_limited'")
            .await
            >= 1
    );

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(300)).await;
    let (status, _) = login(&app, &user.email).await;
    assert_eq!(status, 200);
    app.stop().await;
}
