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
    let (status, second) = app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": user.refresh})),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(second_refresh, user.refresh);
    let (status, third) = app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": second_refresh})),
        )
        .await;
    assert_eq!(status, 200);
    let third_refresh = third["refresh_token"].as_str().expect("rotated").to_owned();

    // An attacker replays the first token: it fails, and so does the legitimate latest one.
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": user.refresh})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": third_refresh})),
        )
        .await;
    assert_eq!(status, 401, "the family is revoked");
    assert!(
        app.count("select count(*) from audit_log where action = 'auth.refresh_reuse'")
            .await
            >= 1
    );

    let (status, _) = app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": "made-up"})),
        )
        .await;
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
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": user.refresh})),
        )
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}

fn forge(claims: Value, key: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key))
        .expect("encode")
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused_with_401() {
    let app = TestApp::spawn().await;
    let user = app.user("admin").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |overrides: Value| {
        let mut base = json!({"iss": "leadflow", "aud": "leadflow-api", "sub": user.id, "role": "admin",
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
    let valid = forge(claims(json!({})), secret, Algorithm::HS256);
    let (status, _) = app.call("GET", "/api/auth/me", Some(&valid), None).await;
    assert_eq!(status, 200, "the forging itself is right");

    let header_none = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = engine.encode(claims(json!({})).to_string());
        format!("{header}.{payload}.")
    };
    let cases = [
        ("alg none", header_none),
        (
            "wrong key",
            forge(
                claims(json!({})),
                b"another-secret-that-is-long-enough-0000",
                Algorithm::HS256,
            ),
        ),
        (
            "HS512 with the right key",
            forge(claims(json!({})), secret, Algorithm::HS512),
        ),
        (
            "wrong audience",
            forge(
                claims(json!({"aud": "someone-else"})),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "wrong issuer",
            forge(claims(json!({"iss": "evil"})), secret, Algorithm::HS256),
        ),
        (
            "expired",
            forge(
                claims(json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000})),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "not yet valid",
            forge(claims(json!({"nbf": now + 3600})), secret, Algorithm::HS256),
        ),
        (
            "no expiry",
            forge(claims(json!({"exp": null})), secret, Algorithm::HS256),
        ),
        (
            "no audience",
            forge(claims(json!({"aud": null})), secret, Algorithm::HS256),
        ),
        (
            "unknown role",
            forge(claims(json!({"role": "root"})), secret, Algorithm::HS256),
        ),
        ("tampered", format!("{valid}x")),
        ("garbage", "not.a.token".to_owned()),
        ("refresh token as access token", user.refresh.clone()),
    ];
    for (name, token) in cases {
        let (status, problem) = app.call("GET", "/api/auth/me", Some(&token), None).await;
        assert_eq!(status, 401, "{name}: {problem}");
    }
    let (status, _) = app.call("GET", "/api/auth/me", None, None).await;
    assert_eq!(status, 401, "anonymous");
    app.stop().await;
}

#[tokio::test]
async fn guessing_one_accounts_password_is_rate_limited_and_the_owner_gets_in_after_the_window() {
    let app = TestApp::spawn_with(&["--login-rate-per-account", "5/2s"]).await;
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
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": user.email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 429, "even the right password waits out the window");
    assert!(
        app.count("select count(*) from audit_log where details->>'outcome' = 'rate_limited'")
            .await
            >= 1
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = app
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": user.email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 200);
    app.stop().await;
}
