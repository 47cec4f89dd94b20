//! The web console over real HTTP against a running daemon: reading needs a login, acting
//! needs the session's CSRF token (or nothing changes), hostile names are shown escaped on
//! every page, no secret is on any page, login attempts are rate-limited, and an approval
//! made with the console's form is recorded under the logged-in name.

use std::time::Duration;

use retraind::cycle::CycleState;

use crate::helpers::{Db, Env, Opts, TOKEN, start_awaiting_approval, start_daemon};

/// Feature names no page may print raw.
pub const HOSTILE_FEATURES: [&str; 2] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
];

/// Rename two demo features to hostile names in both windows' CSVs.
pub fn hostile_headers(env: &Env) {
    let data = env.dir.path().join("data");
    for file in [
        data.join("reference.csv"),
        data.join("current").join(format!("{}.csv", env.date)),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.replacen(
            "feature_b,feature_c,",
            "\"\"\"><img src=x onerror=alert(1)>\",<script>alert(1)</script>,",
            1,
        );
        std::fs::write(&file, text).unwrap();
    }
}

/// An HTTP client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Log in as `user`; the session cookie (`name=value`) and its CSRF token.
async fn login(http: &reqwest::Client, base: &str, user: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/login"))
        .form(&[("user", user), ("token", TOKEN), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("; HttpOnly") && set.contains("; SameSite=Strict") && !set.contains("Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get(http, base, "/pipelines/p1", &cookie).await.1;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field on the pipeline page:\n{page}"))
        .to_string();
    (cookie, csrf)
}

async fn get(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> (u16, String) {
    let r = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> u16 {
    http.post(format!("{base}{path}"))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_forged_actions_escapes_names_and_limits_logins() {
    let opts = Opts {
        approval: "manual",
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    hostile_headers(&env);
    let (running, shutdown, id) = start_awaiting_approval(&env).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    let http = client();

    // Reading needs a login by default.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );

    // Acting without a session, or with a wrong or missing CSRF token, changes nothing.
    let reason = "<script>alert(2)</script>";
    let forged = [("csrf", "x"), ("reason", reason)];
    assert_eq!(
        post(&http, &base, "/pipelines/p1/freeze", "", &forged).await,
        401
    );
    assert_eq!(
        post(&http, &base, &format!("/cycles/{id}/approve"), "", &forged).await,
        401
    );
    let user = "\"><img src=x onerror=alert(3)>";
    let (cookie, csrf) = login(&http, &base, user).await;
    assert_eq!(
        post(&http, &base, "/pipelines/p1/freeze", &cookie, &forged).await,
        403
    );
    assert_eq!(
        post(
            &http,
            &base,
            "/pipelines/p1/freeze",
            &cookie,
            &[("reason", reason)]
        )
        .await,
        403
    );
    assert_eq!(
        post(
            &http,
            &base,
            &format!("/cycles/{id}/reject"),
            &cookie,
            &forged
        )
        .await,
        403
    );
    assert!(store.holds("p1").await.unwrap().frozen.is_none());
    assert!(store.approvals(id).await.unwrap().is_empty());
    assert_eq!(
        store.cycle(id).await.unwrap().unwrap().state,
        CycleState::AwaitingApproval
    );

    // With the token the freeze lands, under the logged-in name.
    let good = [("csrf", csrf.as_str()), ("reason", reason)];
    assert_eq!(
        post(&http, &base, "/pipelines/p1/freeze", &cookie, &good).await,
        303
    );
    let frozen = store.holds("p1").await.unwrap().frozen.unwrap();
    assert_eq!((frozen.by.as_str(), frozen.reason.as_str()), (user, reason));

    // Every page kind shows the hostile names escaped and no secret.
    let version = store.version_for_cycle(id).await.unwrap().unwrap().version;
    let pages = [
        "/".to_string(),
        "/pipelines/p1".to_string(),
        format!("/cycles/{id}"),
        format!("/pipelines/p1/versions/{version}"),
        "/login".to_string(),
    ];
    for path in &pages {
        let (code, body) = get(&http, &base, path, &cookie).await;
        assert_eq!(code, 200, "{path}: {body}");
        for raw in ["<script", "<img", "onerror=alert(1)>"] {
            assert!(!body.contains(raw), "{path} prints `{raw}` raw:\n{body}");
        }
        assert!(!body.contains(TOKEN), "{path} shows the API token");
        assert!(
            !body.contains(&cookie[cookie.find('=').unwrap() + 1..]),
            "{path} shows the session id"
        );
    }
    let cycle_page = get(&http, &base, &format!("/cycles/{id}"), &cookie).await.1;
    for name in HOSTILE_FEATURES {
        let escaped = maud::html! { (name) }.into_string();
        assert!(cycle_page.contains(&escaped), "cycle page lacks {escaped}");
    }
    let overview = get(&http, &base, "/", &cookie).await.1;
    assert!(
        overview.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{overview}"
    );
    assert!(
        overview.contains("&quot;&gt;&lt;img src=x onerror=alert(3)&gt;"),
        "{overview}"
    );

    // Resume, then approve with the form: recorded under the name, channel `console`.
    assert_eq!(
        post(
            &http,
            &base,
            "/pipelines/p1/resume",
            &cookie,
            &[("csrf", &csrf)]
        )
        .await,
        303
    );
    assert_eq!(
        post(
            &http,
            &base,
            &format!("/cycles/{id}/approve"),
            &cookie,
            &[("csrf", &csrf), ("reason", "looks fine")]
        )
        .await,
        303
    );
    let approvals = store.approvals(id).await.unwrap();
    assert_eq!(
        (
            approvals[0].approver.as_str(),
            approvals[0].channel.as_str()
        ),
        (user, "console")
    );

    // Five wrong tokens from one address, then even the right one is refused for a while.
    for _ in 0..5 {
        let r = http
            .post(format!("{base}/login"))
            .form(&[("user", "mallory"), ("token", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http
        .post(format!("{base}/login"))
        .form(&[("user", "mallory"), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "900");
    assert!(r.headers().get("set-cookie").is_none());
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

/// `env`'s config with `line` added to `[server]`.
fn with_server_line(env: &Env, line: &str) {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        text.replacen("[server]\n", &format!("[server]\n{line}\n"), 1),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_can_be_public_or_the_console_off_and_the_cookie_is_secure_behind_tls() {
    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    with_server_line(&env, "console = \"public\"");
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    let http = client();
    let (code, page) = get(&http, &base, "/pipelines/p1", "").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<h1>Pipeline p1</h1>"), "{page}");
    assert!(
        !page.contains("name=\"csrf\""),
        "a reader without a session gets no forms"
    );
    assert_eq!(
        post(&http, &base, "/pipelines/p1/freeze", "", &[("csrf", "")]).await,
        401
    );
    assert!(
        running
            .engine
            .store()
            .holds("p1")
            .await
            .unwrap()
            .frozen
            .is_none()
    );
    // Behind a TLS-terminating proxy the session cookie is Secure.
    let r = http
        .post(format!("{base}/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("user", "ada"), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;

    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        text.replace("console = \"public\"", "console = \"off\""),
    )
    .unwrap();
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    for path in ["/", "/pipelines/p1", "/login"] {
        assert_eq!(get(&http, &base, path, "").await.0, 404, "{path}");
    }
    let api = format!("{base}/api/v1/pipelines");
    assert_eq!(
        http.get(&api).send().await.unwrap().status(),
        200,
        "the API stays"
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
