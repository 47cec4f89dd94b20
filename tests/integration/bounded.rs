//! The memory-bounded check (`data::stream`, `drift::detect_profiles`) through the binary:
//! streamed files give the check of rows number for number while the values fit the budget,
//! in every format; beyond it features are sketched with the same verdicts; a stored
//! profile replaces the reference's rows; the profile of part files and the merge of the
//! parts' profiles agree; bad input names its file and column.

use std::path::{Path, PathBuf};

use retraind::data::{Roles, Table, TableFormat, write_table};
use serde_json::Value;

use crate::helpers::retraind;

/// `rows` rows: x0..x2 normal with `shift` added, `seg` (a/b/c, tilted towards a when
/// x0 is shifted), a label.
pub(crate) fn frame(rows: usize, shift: [f64; 3], seed: u64) -> Table {
    use rand::{Rng, SeedableRng};
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut column = |s: f64| -> Vec<f64> {
        (0..rows)
            .map(|_| rand_distr::StandardNormal.sample(&mut rng))
            .map(|v: f64| v + s)
            .collect()
    };
    let numerical = (0..3)
        .map(|i| (format!("x{i}"), column(shift[i])))
        .collect();
    let tilt = if shift[0] > 0.0 { 0.1 } else { 0.0 };
    let seg = (0..rows)
        .map(|_| {
            let u: f64 = rng.random();
            if u < 1.0 / 3.0 + tilt {
                "a"
            } else if u < 2.0 / 3.0 {
                "b"
            } else {
                "c"
            }
            .to_string()
        })
        .collect();
    let mut t = Table::from_columns(numerical, vec![("seg".into(), seg)]);
    t.target = Some((0..rows).map(|i| (i % 2).to_string()).collect());
    t
}

pub(crate) fn roles() -> Roles {
    Roles {
        numerical: vec!["x0".into(), "x1".into(), "x2".into()],
        categorical: vec!["seg".into()],
        target: "target".into(),
        prediction: None,
        timestamp: None,
    }
}

/// The table as Parquet, CSV and NDJSON files named `stem.*` in `dir`.
fn write_all(dir: &Path, stem: &str, t: &Table) -> [PathBuf; 3] {
    let path = |ext: &str| dir.join(format!("{stem}.{ext}"));
    write_table(t, &roles(), &path("parquet"), TableFormat::Parquet).unwrap();
    write_table(t, &roles(), &path("csv"), TableFormat::Csv).unwrap();
    let mut lines = String::new();
    for i in 0..t.rows {
        let mut row = serde_json::Map::new();
        for (name, v) in &t.numerical {
            row.insert(name.clone(), v[i].into());
        }
        row.insert("seg".into(), t.categorical[0].1[i].clone().into());
        row.insert(
            "target".into(),
            t.target.as_ref().unwrap()[i].clone().into(),
        );
        lines.push_str(&Value::Object(row).to_string());
        lines.push('\n');
    }
    std::fs::write(path("ndjson"), lines).unwrap();
    [path("parquet"), path("csv"), path("ndjson")]
}

/// `retraind check --format json --correction none` with `extra` arguments: (status, report).
fn check(reference: &Path, current: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["--correction", "none"];
    args.extend_from_slice(extra);
    let (code, out, err) = crate::helpers::check_json(reference, current, &args);
    let report = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, report, err)
}

/// (name, drifted) per feature.
fn verdicts(report: &Value) -> Vec<(String, bool)> {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["drifted"] == true,
            )
        })
        .collect()
}

/// 60,000 rows a side in three formats, read in blocks and row groups of a 16 MiB budget
/// (a CSV of two blocks): the features are the check of rows', every number equal.
#[test]
fn streamed_files_give_the_check_of_rows_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write_all(dir.path(), "ref", &frame(60_000, [0.0; 3], 1));
    let current = write_all(dir.path(), "cur", &frame(60_000, [0.25, 0.0, 0.05], 2));
    let csv_bytes = std::fs::metadata(&current[1]).unwrap().len();
    assert!(
        csv_bytes > 2 << 20,
        "{csv_bytes}: more than one 2 MiB block"
    );
    // The check of rows: --multivariate reads both files whole.
    let (code, rows, err) = check(&reference[0], &current[0], &["--multivariate"]);
    assert_eq!(code, 3, "{err}");
    let want = &rows["features"];
    assert_eq!(
        verdicts(&rows),
        [
            ("x0".to_string(), true),
            ("x1".into(), false),
            ("x2".into(), false),
            ("seg".into(), true)
        ]
    );
    for (r, c) in reference.iter().zip(&current) {
        let (code, streamed, err) = check(r, c, &["--memory-budget", "16MiB"]);
        assert_eq!(code, 3, "{err}");
        assert_eq!(&streamed["features"], want, "{}", c.display());
        assert_eq!(streamed["current"]["rows"], 60_000);
        assert_eq!(streamed["quality"]["passed"], true);
        assert!(streamed["features"][0].get("rank_error").is_none(), "exact");
    }
    // The fingerprint is the file's, as the check of rows reports it.
    let (_, streamed, _) = check(&reference[0], &current[0], &[]);
    assert_eq!(streamed["current"]["blake3"], rows["current"]["blake3"]);
    assert_eq!(streamed["current"]["schema"], rows["current"]["schema"]);
}

/// 400,000 rows a side in a 16 MiB budget: past the exact limit every numerical feature is
/// sketched (rank error 2e-3 for the two sides), D within it of the exact one, the same
/// verdicts; a stored profile of the reference gives them again without its rows, and is a
/// few percent of the Parquet file; the profile of two part files equals the merge of
/// the parts' profiles.
#[test]
fn beyond_the_budget_sketches_reach_the_same_verdicts_and_profiles_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let r = frame(400_000, [0.0; 3], 3);
    let c = frame(400_000, [0.25, 0.0, 0.05], 4);
    let parquet = |stem: &str, t: &Table| {
        let p = dir.path().join(format!("{stem}.parquet"));
        write_table(t, &roles(), &p, TableFormat::Parquet).unwrap();
        p
    };
    let (reference, current) = (parquet("ref", &r), parquet("cur", &c));
    let (_, exact, _) = check(&reference, &current, &[]);
    let (code, sketched, err) = check(&reference, &current, &["--memory-budget", "16MiB"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(verdicts(&sketched), verdicts(&exact));
    for (e, s) in exact["features"]
        .as_array()
        .unwrap()
        .iter()
        .zip(sketched["features"].as_array().unwrap())
        .take(3)
    {
        assert!(e.get("rank_error").is_none());
        let eps = s["rank_error"].as_f64().unwrap();
        assert!((0.0019..=0.002).contains(&eps), "{eps}");
        let (de, ds) = (
            e["statistic"].as_f64().unwrap(),
            s["statistic"].as_f64().unwrap(),
        );
        assert!((de - ds).abs() <= eps, "{de} vs {ds}");
    }

    let profile = dir.path().join("ref.profile");
    let (code, out, err) = retraind(&[
        "profile",
        "--input",
        reference.to_str().unwrap(),
        "--output",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sketched (rank error 1.00e-3)"), "{out}");
    let (size, data) = (
        std::fs::metadata(&profile).unwrap().len(),
        std::fs::metadata(&reference).unwrap().len(),
    );
    assert!(size * 20 < data, "profile {size} bytes vs Parquet {data}");
    let (code, from_profile, err) = check(&profile, &current, &[]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(verdicts(&from_profile), verdicts(&exact));
    assert_eq!(
        from_profile["reference"]["blake3"],
        exact["reference"]["blake3"]
    );

    // Two part files: one profile of the glob, and the merge of one profile each.
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let half: Vec<usize> = (0..200_000).collect();
    let rest: Vec<usize> = (200_000..400_000).collect();
    for (name, idx) in [("part-0", &half), ("part-1", &rest)] {
        let p = parts.join(format!("{name}.parquet"));
        write_table(&r.take(idx), &roles(), &p, TableFormat::Parquet).unwrap();
        let out = parts.join(format!("{name}.profile"));
        let (code, _, err) = retraind(&[
            "profile",
            "--input",
            p.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    let (glob, merged) = (
        dir.path().join("glob.profile"),
        dir.path().join("merged.profile"),
    );
    let pattern = parts.join("part-*.parquet");
    for args in [
        vec![
            "--input",
            pattern.to_str().unwrap(),
            "--output",
            glob.to_str().unwrap(),
        ],
        vec![
            "--merge",
            parts.join("part-0.profile").to_str().unwrap(),
            parts.join("part-1.profile").to_str().unwrap(),
        ],
    ] {
        let mut all = vec!["profile"];
        all.extend(args.iter().copied());
        if all[1] == "--merge" {
            all.extend(["--output", merged.to_str().unwrap()]);
        }
        let (code, _, err) = retraind(&all);
        assert_eq!(code, 0, "{err}");
    }
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let (g, m) = (read(&glob), read(&merged));
    assert_eq!(g["profile"]["rows"], 400_000);
    assert_eq!(m["profile"]["rows"], 400_000);
    assert_eq!(
        g["source"]["blake3"], m["source"]["blake3"],
        "hash of the parts' hashes"
    );
    let seg = |v: &Value| v["profile"]["features"][3].clone();
    assert_eq!(seg(&g), seg(&m), "category counts add up");
    for i in 0..3 {
        let (a, b) = (&g["profile"]["features"][i], &m["profile"]["features"][i]);
        assert_eq!((&a["count"], &a["range"]), (&b["count"], &b["range"]));
        let (ma, mb) = (a["mean"].as_f64().unwrap(), b["mean"].as_f64().unwrap());
        assert!((ma - mb).abs() < 1e-12, "{ma} {mb}");
    }
    for p in [&glob, &merged] {
        let (_, v, err) = check(p, &current, &[]);
        assert_eq!(verdicts(&v), verdicts(&exact), "{err}");
    }
}

/// A text value deep in a CSV (in its second block) and a missing column fail the check with
/// the file and the column named; a corrupt profile names the file.
#[test]
fn bad_input_names_its_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let [reference, _, _] = write_all(dir.path(), "ref", &frame(60_000, [0.0; 3], 5));
    let [_, csv, _] = write_all(dir.path(), "cur", &frame(60_000, [0.0; 3], 6));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let row = &mut lines[55_000];
    let first_comma = row.find(',').unwrap();
    row.replace_range(..first_comma, "oops");
    std::fs::write(&csv, lines.join("\n")).unwrap();
    let (code, _, err) = check(&reference, &csv, &["--memory-budget", "16MiB"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cur.csv") && err.contains("oops"), "{err}");

    let no_x1 = dir.path().join("no_x1.csv");
    let header_dropped: Vec<String> = text
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(1);
            cells.join(",")
        })
        .collect();
    std::fs::write(&no_x1, header_dropped.join("\n")).unwrap();
    let (code, _, err) = check(&reference, &no_x1, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no_x1.csv") && err.contains("`x1` is missing"),
        "{err}"
    );

    let broken = dir.path().join("broken.profile");
    std::fs::write(&broken, "{\"source\": 1}").unwrap();
    let (code, _, err) = check(&broken, &csv, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("broken.profile") && err.contains("not a retraind profile"),
        "{err}"
    );
}

/// Long reads show a progress bar on a terminal (a pty from util-linux's `script`), and
/// write nothing extra to a stderr that is not one.
#[test]
fn progress_shows_on_a_terminal_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, current) = (dir.path().join("r.parquet"), dir.path().join("c.parquet"));
    write_table(
        &frame(400_000, [0.0; 3], 1),
        &roles(),
        &reference,
        TableFormat::Parquet,
    )
    .unwrap();
    write_table(
        &frame(400_000, [0.1; 3], 2),
        &roles(),
        &current,
        TableFormat::Parquet,
    )
    .unwrap();
    let (code, _, err) = crate::helpers::check_json(&reference, &current, &[]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(
        err, "",
        "nothing but the report when stderr is not a terminal"
    );
    let report = dir.path().join("report.json");
    let command = format!(
        "{} check --reference {} --current {} --format json --output {}",
        env!("CARGO_BIN_EXE_retraind"),
        reference.display(),
        current.display(),
        report.display()
    );
    let run = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() || run.status.code() == Some(3),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("reading {}", current.display())),
        "{shown}"
    );
    assert!(
        shown.contains(" B/8.") && shown.contains(" MiB ("),
        "a bar of bytes read: {shown}"
    );
    assert!(report.is_file());
    // `profile` the same way: a bar on a terminal, nothing on stderr off one.
    let bin = env!("CARGO_BIN_EXE_retraind");
    let quiet = std::process::Command::new(bin)
        .args(["profile", "--input"])
        .arg(&current)
        .arg("--output")
        .arg(dir.path().join("quiet.profile"))
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let command = format!(
        "{bin} profile --input {} --output {}",
        current.display(),
        dir.path().join("c.profile").display()
    );
    let run = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("reading {}", current.display())) && shown.contains(" MiB ("),
        "a bar of bytes read: {shown}"
    );
}
