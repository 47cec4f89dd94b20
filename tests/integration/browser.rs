//! The console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `chromedriver` (Debian's `chromium-driver`) over the W3C WebDriver protocol, spoken here
//! with reqwest. The test logs in, opens a candidate awaiting approval, approves it with the
//! button and sees the cycle complete and the champion change; it checks accessibility
//! basics on every page kind (every control labelled, headings in order, every verdict in
//! words) and saves a screenshot of each page kind under `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use retraind::cycle::CycleState;

use crate::helpers::{
    Db, Env, Opts, Server, TOKEN, free_port, program, start_awaiting_approval, unavailable,
    wait_state,
};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn start(driver: &str) -> Browser {
        let http = reqwest::Client::new();
        let binary = program("chromium", "RETRAIND_TEST_CHROMIUM")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1200,1400", "--no-first-run", "--disable-background-networking"]
            }
        }}});
        let mut last = String::new();
        for _ in 0..50 {
            match http
                .post(format!("{driver}/session"))
                .json(&caps)
                .send()
                .await
            {
                Ok(r) => {
                    let v: Value = r.json().await.unwrap();
                    if let Some(id) = v["value"]["sessionId"].as_str() {
                        return Browser {
                            base: format!("{driver}/session/{id}"),
                            http,
                        };
                    }
                    panic!("chromedriver refused a session: {v}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("chromedriver did not answer: {last}");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for `{css}`: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        )
        .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's text once it contains `needle` (a click's navigation may still be on its
    /// way when the click returns).
    async fn wait_text(&self, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed `{needle}`:\n{text}");
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Accessibility basics of the page: each problem found, as a sentence.
    async fn accessibility_problems(&self) -> Vec<String> {
        let v = self
            .script(
                r#"
const problems = [];
for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, button')) {
  const byFor = el.id && document.querySelector('label[for="' + el.id + '"]');
  const named = byFor || el.closest('label') || el.getAttribute('aria-label') ||
    (el.tagName === 'BUTTON' && el.innerText.trim());
  if (!named) problems.push('unlabelled ' + el.tagName.toLowerCase() + ' ' + (el.name || el.outerHTML));
}
let level = 0;
for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
  const n = Number(h.tagName[1]);
  if (n > level + 1) problems.push('heading ' + h.tagName + ' "' + h.innerText + '" skips a level after h' + level);
  level = n;
}
if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
for (const b of document.querySelectorAll('.badge')) {
  if (!b.innerText.trim()) problems.push('a verdict shown by colour alone');
}
if (!document.documentElement.lang) problems.push('no lang on <html>');
return problems;
"#,
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_a_candidate_in_the_browser() {
    let Some(driver_bin) = program("chromedriver", "RETRAIND_TEST_CHROMEDRIVER") else {
        unavailable("chromedriver (Debian packages `chromium` and `chromium-driver`)");
        return;
    };
    let opts = Opts {
        approval: "manual",
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    crate::console::hostile_headers(&env);
    let (running, shutdown, id) = start_awaiting_approval(&env).await;
    let site = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    assert!(store.alias("p1", "champion").await.unwrap().is_none());

    let port = free_port();
    let _driver = Server(
        std::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let b = Browser::start(&format!("http://127.0.0.1:{port}")).await;

    // The login page, reached by asking for the cycle.
    b.go(&format!("{site}/cycles/{id}")).await;
    b.wait_text("API token").await;
    assert_eq!(b.accessibility_problems().await, Vec::<String>::new());
    b.screenshot("login").await;
    b.type_into("#user", "ada").await;
    b.type_into("#token", TOKEN).await;
    b.click("button[type=submit].primary").await;

    // Back on the cycle, awaiting approval, with its story and the buttons.
    let text = b.wait_text(&format!("Cycle {id}")).await;
    assert!(text.contains("Awaiting approval"), "{text}");
    assert!(
        text.contains("<script>alert(1)</script>"),
        "the feature name reads as text: {text}"
    );
    assert_eq!(b.accessibility_problems().await, Vec::<String>::new());
    b.screenshot("cycle-awaiting-approval").await;
    b.type_into("#approve-reason", "gate table looks right")
        .await;
    b.click("form[action$='/approve'] button").await;

    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(done.outcome, Some(retraind::cycle::Outcome::Deployed));
    let champion = store.alias("p1", "champion").await.unwrap().unwrap();
    assert_eq!(Some(champion.version), done.candidate_version);
    let approvals = store.approvals(id).await.unwrap();
    assert_eq!(
        (
            approvals[0].approver.as_str(),
            approvals[0].channel.as_str()
        ),
        ("ada", "console")
    );

    // The cycle page now tells the whole story; then each other page kind.
    b.go(&format!("{site}/cycles/{id}")).await;
    let text = b.text().await;
    for part in [
        "completed",
        "Data read",
        "Check",
        "Decision",
        "Training",
        "Evaluation gate",
        "Approvals",
        "ada",
        "Transitions",
    ] {
        assert!(
            text.contains(part),
            "the cycle page lacks `{part}`:\n{text}"
        );
    }
    assert_eq!(b.accessibility_problems().await, Vec::<String>::new());
    b.screenshot("cycle").await;
    let v = champion.version;
    for (name, path, expect) in [
        ("overview", "/".to_string(), format!("v{v}")),
        (
            "pipeline",
            "/pipelines/p1".to_string(),
            "Share of features drifted".to_string(),
        ),
        (
            "version",
            format!("/pipelines/p1/versions/{v}"),
            "Lineage".to_string(),
        ),
    ] {
        b.go(&format!("{site}{path}")).await;
        let text = b.text().await;
        assert!(text.contains(&expect), "{name} lacks `{expect}`:\n{text}");
        if name == "overview" {
            assert!(
                text.contains("no drift"),
                "the last check's verdict: {text}"
            );
        }
        assert_eq!(
            b.accessibility_problems().await,
            Vec::<String>::new(),
            "{name}"
        );
        b.screenshot(name).await;
    }
    b.quit().await;
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
