//! The frame every console page shares (head, navigation, who is logged in) and the
//! stylesheet. Verdicts are always written out in words beside any colour.

use axum::http::header;
use axum::response::IntoResponse;
use maud::{DOCTYPE, Markup, html};

use super::Viewer;

/// A whole page: `title` in the tab and the body under the navigation bar.
pub(crate) fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · retraind" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "retraind" }
                        @if let Some(v) = viewer {
                            @match (v.user(), v.csrf()) {
                                (Some(user), Some(csrf)) => {
                                    span.who { "Signed in as " strong { (user) } }
                                    form.inline method="post" action="/logout" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button type="submit" { "Log out" }
                                    }
                                }
                                _ => { a href="/login" { "Log in" } }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A hidden CSRF field and the viewer's forms render only for a logged-in person.
pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! {
        @if let Some(csrf) = viewer.csrf() {
            input type="hidden" name="csrf" value=(csrf);
        }
    }
}

/// A verdict in words, marked with a shape as well as a colour.
pub(crate) fn badge(kind: Tone, text: &str) -> Markup {
    let (class, mark) = match kind {
        Tone::Good => ("badge good", "✓ "),
        Tone::Bad => ("badge bad", "✗ "),
        Tone::Warn => ("badge warn", "! "),
        Tone::Neutral => ("badge", ""),
    };
    html! { span class=(class) { span aria-hidden="true" { (mark) } (text) } }
}

/// How a verdict reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Good,
    Bad,
    Warn,
    Neutral,
}

/// A time as people read it in a table.
pub(crate) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A metric value, or a dash.
pub(crate) fn number(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "–".to_string())
}

const CSS: &str = r#"
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d0d7de; --good: #1a7f37; --bad: #b42318; --warn: #9a6700; --accent: #0b57d0; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: #fafbfc; }
header.top { background: #fff; border-bottom: 1px solid var(--line); padding: .5rem 1.5rem; }
header.top nav { display: flex; gap: 1rem; align-items: center; }
.brand { font-weight: 700; color: var(--fg); text-decoration: none; margin-right: auto; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 1.75rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: 1rem 0 .25rem; }
a { color: var(--accent); }
table { border-collapse: collapse; width: 100%; background: #fff; margin: .25rem 0 1rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; background: #f3f5f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: .6rem; border: 1px solid var(--line); font-size: .85rem; white-space: nowrap; }
.badge.good { color: var(--good); border-color: var(--good); }
.badge.bad { color: var(--bad); border-color: var(--bad); font-weight: 600; }
.badge.warn { color: var(--warn); border-color: var(--warn); }
.hold { border-left: 4px solid var(--warn); background: #fff8e6; padding: .5rem .75rem; margin: .5rem 0; }
.error { border-left: 4px solid var(--bad); background: #fdecea; padding: .5rem .75rem; }
.notice { border-left: 4px solid var(--good); background: #eaf6ec; padding: .5rem .75rem; }
.muted, .empty { color: var(--muted); }
form.inline { display: inline; }
form.action { background: #fff; border: 1px solid var(--line); padding: .75rem; margin: .5rem 0; max-width: 36rem; }
form.action label, form.login label { display: block; margin: .35rem 0 .15rem; font-weight: 600; }
input[type=text], input[type=password], input[type=number] { width: 100%; padding: .35rem; border: 1px solid #8c959f; border-radius: 4px; font: inherit; }
button { font: inherit; padding: .35rem .9rem; border-radius: 4px; border: 1px solid #8c959f; background: #fff; cursor: pointer; margin-top: .5rem; }
button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
button.danger { background: var(--bad); color: #fff; border-color: var(--bad); }
button:focus, a:focus, input:focus { outline: 3px solid #f5a524; outline-offset: 1px; }
figure.chart { margin: .5rem 0 1rem; background: #fff; border: 1px solid var(--line); padding: .5rem; }
figure.chart svg { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: .85rem; }
.axis { stroke: #8c959f; stroke-width: 1; }
.tick { font-size: 10px; fill: var(--muted); }
polyline { fill: none; stroke-width: 2; }
polyline.s-solid { stroke: var(--accent); }
polyline.s-dashed { stroke: #8250df; stroke-dasharray: 6 4; }
polyline.s-dotted { stroke: var(--bad); stroke-dasharray: 2 3; }
circle.s-solid { fill: var(--accent); }
circle.s-dashed { fill: #8250df; }
circle.s-dotted { fill: var(--bad); }
.key.s-solid { border-bottom: 2px solid var(--accent); }
.key.s-dashed { border-bottom: 2px dashed #8250df; }
.key.s-dotted { border-bottom: 2px dotted var(--bad); }
line.marker { stroke: var(--good); stroke-width: 1.5; stroke-dasharray: 1 2; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .25rem 0 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
ol.story > li { margin: .25rem 0; }
code, pre { font-family: ui-monospace, monospace; font-size: .9em; }
pre { background: #fff; border: 1px solid var(--line); padding: .5rem; overflow-x: auto; }
.skip { position: absolute; left: -999px; }
"#;

/// `GET /console.css`.
pub(crate) async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
}
