//! Operations files proven with the real tools: the alert rules with promtool.

use crate::helpers::unavailable;

#[test]
fn alert_rules_pass_their_promtool_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let Ok(out) = std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(dir)
        .output()
    else {
        unavailable("promtool");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
}
