//! The code map's rules, checked on the source (ARCHITECTURE.md states them):
//!
//! - no file under `src/` is longer than 1,000 lines, and no function outside the tests is
//!   longer than 150;
//! - the policy modules (statistics, profiles, drift, decision, quality, performance, gate, guards,
//!   signing, schedule, the cycle's states, the splits, the records, the validation
//!   vocabulary) do no I/O and know nothing of the daemon around them: they never name the
//!   store, the server, the engine, the config assembly, the daemon, the CLI, tokio, reqwest
//!   or `std::fs`;
//! - the top-level modules import each other without a circle.
//!
//! The source is read with comments, strings and characters blanked out, so a doc comment
//! that mentions `crate::store` is not an import; test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to `src/`.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// `text` with comments, string and character literals replaced by spaces (newlines kept),
/// so what remains is code.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied().unwrap_or('\0');
        if c == '/' && next == '/' {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == '"' || next == '#') && !is_ident(b.get(i.wrapping_sub(1))) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(b[i..j.min(b.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && char_literal_len(&b[i..]).is_some() {
            let n = char_literal_len(&b[i..]).unwrap_or(1);
            out.extend(std::iter::repeat_n(' ', n));
            i += n;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The length of a character literal starting at `s[0] == '\''`, or `None` (a lifetime).
fn char_literal_len(s: &[char]) -> Option<usize> {
    match s.get(1)? {
        '\\' => (2..12).find(|&k| s.get(k) == Some(&'\'')).map(|k| k + 1),
        _ if s.get(2) == Some(&'\'') => Some(3),
        _ => None,
    }
}

/// The index just past the block whose `{` is at `open`.
fn block_end(code: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The files that are test modules: declared `#[cfg(test)] mod name;` by their parent.
fn test_files(files: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, text) in files {
        let dir = match path.rsplit_once('/') {
            Some((dir, "mod.rs")) => format!("{dir}/"),
            Some((dir, file)) => format!("{dir}/{}/", file.trim_end_matches(".rs")),
            None if path == "lib.rs" || path == "main.rs" => String::new(),
            None => format!("{}/", path.trim_end_matches(".rs")),
        };
        let code = code_only(text);
        for (at, _) in code.match_indices("#[cfg(test)]") {
            let rest = code[at + 12..].trim_start();
            if let Some(name) = rest.strip_prefix("mod ").and_then(|r| r.split_once(';')) {
                let name = name.0.trim();
                out.insert(format!("{dir}{name}.rs"));
                out.insert(format!("{dir}{name}/mod.rs"));
            }
        }
    }
    out
}

/// The code of a file without its test modules (`#[cfg(test)] mod … { … }`); a file that is
/// itself a test module has none.
fn non_test_code(path: &str, text: &str, tests: &BTreeSet<String>) -> String {
    if tests.contains(path) {
        return String::new();
    }
    let code = code_only(text);
    let bytes = code.as_bytes();
    let mut out = code.clone().into_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let start = from + at;
        let rest = &code[start..];
        let item = rest.find(['{', ';']).unwrap_or(rest.len());
        if rest[..item].contains("mod ") && rest.as_bytes().get(item) == Some(&b'{') {
            let end = block_end(bytes, start + item);
            for c in &mut out[start..end] {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
            from = end;
        } else {
            from = start + 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

#[test]
fn no_file_over_1000_lines_and_no_function_over_150() {
    let files = sources();
    let tests = test_files(&files);
    assert!(tests.contains("engine/testkit.rs"));
    let mut long = Vec::new();
    for (path, text) in &files {
        let (path, text) = (path.as_str(), text.as_str());
        let lines = text.lines().count();
        if lines > 1000 {
            long.push(format!("{path}: {lines} lines"));
        }
        let code = non_test_code(path, text, &tests);
        let bytes = code.as_bytes();
        let mut from = 0;
        while let Some(at) = code[from..].find("fn ") {
            let start = from + at;
            from = start + 3;
            if start > 0 && is_ident(code[..start].chars().last().as_ref()) {
                continue;
            }
            let Some(rel) = code[start..].find(['{', ';']) else {
                continue;
            };
            if bytes[start + rel] == b';' {
                continue;
            }
            let end = block_end(bytes, start + rel);
            let n = line_of(&code, end) - line_of(&code, start) + 1;
            if n > 150 {
                let name: String = code[start + 3..]
                    .chars()
                    .take_while(|c| is_ident(Some(c)))
                    .collect();
                long.push(format!(
                    "{path}:{} fn {name}: {n} lines",
                    line_of(&code, start)
                ));
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}

/// The policy modules: pure, no I/O, no knowledge of the daemon.
const POLICY: [&str; 18] = [
    "stats.rs",
    "retention.rs",
    "profile/",
    "estimate/",
    "kolmogorov.rs",
    "drift/",
    "decision.rs",
    "quality.rs",
    "performance/",
    "gate/",
    "guards/",
    "signing.rs",
    "schedule.rs",
    "cycle.rs",
    "splits.rs",
    "records.rs",
    "nan.rs",
    "validate/mod.rs",
];

/// What they must not name.
const FORBIDDEN: [&str; 11] = [
    "crate::store",
    "crate::server",
    "crate::engine",
    "crate::config",
    "crate::daemon",
    "crate::cli",
    "crate::validate::files",
    "tokio",
    "reqwest",
    "std::fs",
    "fs::",
];

#[test]
fn policy_modules_do_no_io_and_know_nothing_of_the_daemon() {
    let files = sources();
    let tests = test_files(&files);
    let mut found = Vec::new();
    let mut checked = 0;
    for (path, text) in &files {
        if !POLICY.iter().any(|p| path.starts_with(p)) || tests.contains(path) {
            continue;
        }
        checked += 1;
        let code = non_test_code(path, text, &tests);
        for word in FORBIDDEN {
            for (at, _) in code.match_indices(word) {
                if !is_ident(code[..at].chars().last().as_ref()) {
                    found.push(format!("{path}:{} names {word}", line_of(&code, at)));
                }
            }
        }
    }
    assert_eq!(checked, 35, "policy files found");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The top-level module a file belongs to (`engine/steps/load.rs` → `engine`).
fn top_module(path: &str) -> String {
    path.split('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".rs")
        .to_string()
}

/// A circle in `edges`, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(k) = path.iter().position(|p| p == n) {
            let mut c = path[k..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_each_other_without_a_circle() {
    let files = sources();
    let tests = test_files(&files);
    let modules: BTreeSet<String> = files.iter().map(|(p, _)| top_module(p)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        let from = top_module(path);
        let code = non_test_code(path, text, &tests);
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| is_ident(Some(c)))
                .collect();
            if name != from && modules.contains(&name) {
                edges.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    assert!(edges.get("engine").is_some_and(|e| e.contains("store")));
    assert_eq!(circle(&edges), None, "import circle");
    // The test can see one: a module that imports back.
    let mut looped = edges.clone();
    looped
        .entry("store".into())
        .or_default()
        .insert("engine".into());
    assert!(circle(&looped).is_some());
}
