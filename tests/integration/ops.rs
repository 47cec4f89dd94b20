//! Operations files proven with the real tools: the alert rules with promtool, the systemd
//! unit with systemd-analyze.

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

/// `systemd-analyze verify` is clean on the shipped unit (with ExecStart pointed at the
/// binary under test, since /usr/local/bin/retraind is not installed here), and the offline
/// security analysis rates the unit's exposure at 2.0 or better.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/retraind.service");
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        unavailable("systemd-analyze (Debian package `systemd`)");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/retraind "),
        "{text}"
    );
    let copy = dir.path().join("retraind.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/retraind", env!("CARGO_BIN_EXE_retraind")),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for retraind.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{report}");
}
