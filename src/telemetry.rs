//! Logging set-up (tracing-subscriber): human text on a terminal, JSON lines for log
//! shippers, and under systemd the journal's native protocol, so `journalctl` can filter on
//! structured fields (`journalctl -u retraind PIPELINE=churn CYCLE=42`).
//!
//! `--log-format auto` picks the journal when stderr is the journal stream systemd gave us
//! (`$JOURNAL_STREAM` names its device and inode), text on a terminal, JSON otherwise. The
//! journal layer sends one datagram per event to `/run/systemd/journal/socket`: `MESSAGE`,
//! `PRIORITY`, `SYSLOG_IDENTIFIER`, `TARGET`, and every event field upper-cased
//! (`pipeline` → `PIPELINE`).

use std::io::IsTerminal;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// The journal under systemd, text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
    /// systemd's journal, with structured fields.
    Journald,
}

/// Whether stderr is the journal stream systemd connected (`$JOURNAL_STREAM=dev:ino`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

/// Install the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let format = match format {
        LogFormat::Auto if stderr_is_journal() && Path::new(JOURNAL_SOCKET).exists() => {
            LogFormat::Journald
        }
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        other => other,
    };
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Journald => match Journald::new(PathBuf::from(JOURNAL_SOCKET)) {
            Ok(layer) => tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init(),
            Err(e) => {
                eprintln!("cannot open the journal socket ({e}); logging JSON to stderr");
                json(filter)
            }
        },
        LogFormat::Json => json(filter),
        _ => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .finish()
            .try_init(),
    };
}

fn json(filter: EnvFilter) -> Result<(), tracing_subscriber::util::TryInitError> {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .finish()
        .try_init()
}

/// A layer that writes events to the journal's native socket.
pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journald {
    pub fn new(path: PathBuf) -> std::io::Result<Journald> {
        Ok(Journald {
            socket: UnixDatagram::unbound()?,
            path,
        })
    }
}

/// syslog priority of a tracing level.
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// Append one field in the journal's export format: `KEY=value\n`, or, for values with a
/// newline, `KEY\n<u64 LE length><value>\n`.
pub fn put_field(buf: &mut Vec<u8>, key: &str, value: &str) {
    if value.contains('\n') {
        buf.extend_from_slice(key.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    } else {
        buf.extend_from_slice(key.as_bytes());
        buf.push(b'=');
        buf.extend_from_slice(value.as_bytes());
    }
    buf.push(b'\n');
}

/// A journal field name from a tracing field name: upper case, `[A-Z0-9_]`, not starting with
/// `_` (reserved for trusted fields) or a digit.
fn field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c == '_' || c.is_ascii_digit()) {
        out.insert(0, 'F');
    }
    out
}

struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest
                .push((field_name(field.name()), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest.push((field_name(field.name()), text));
        }
    }
}

impl<S: Subscriber> Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields {
            message: String::new(),
            rest: Vec::new(),
        };
        event.record(&mut fields);
        let mut buf = Vec::with_capacity(256);
        put_field(&mut buf, "MESSAGE", &fields.message);
        put_field(&mut buf, "PRIORITY", priority(meta.level()));
        put_field(&mut buf, "SYSLOG_IDENTIFIER", "retraind");
        put_field(&mut buf, "TARGET", meta.target());
        for (k, v) in &fields.rest {
            put_field(&mut buf, k, v);
        }
        // A lost log line must not take the daemon down; stderr says why once per event.
        if let Err(e) = self.socket.send_to(&buf, &self.path) {
            eprintln!("journal write failed ({e}): {}", fields.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_socket_as_native_journal_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let layer = Journald::new(path).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                pipeline = "churn",
                cycle = 42i64,
                "step failed:\nsecond line"
            );
        });
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let got = &buf[..n];
        let text = String::from_utf8_lossy(got);
        assert!(text.contains("PRIORITY=4\n"), "{text}");
        assert!(text.contains("PIPELINE=churn\n"), "{text}");
        assert!(text.contains("CYCLE=42\n"), "{text}");
        assert!(text.contains("SYSLOG_IDENTIFIER=retraind\n"), "{text}");
        // The multi-line message in the binary form: name, newline, 8-byte length, bytes.
        let message = "step failed:\nsecond line";
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&(message.len() as u64).to_le_bytes());
        want.extend_from_slice(message.as_bytes());
        want.push(b'\n');
        assert!(got.windows(want.len()).any(|w| w == want.as_slice()));
        assert_eq!(field_name("_secret"), "F_SECRET");
        assert_eq!(field_name("from.state"), "FROM_STATE");
    }
}
