//! `[server]`: where the HTTP API listens, its token, and how people reach it — raw shape,
//! defaults and validation. (The daemon's and the server's own sections live here: those
//! modules consume the whole assembled [`super::Config`], so their settings cannot live
//! with them without an import circle.)

use std::net::SocketAddr;

use serde::Deserialize;

use crate::secret::SecretSource;
use crate::validate::Checker;
use crate::validate::files::Files;

/// Default admin/API listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub api_token_file: Option<String>,
    pub api_token_env: Option<String>,
    pub public_url: Option<String>,
    pub console: Option<String>,
}

/// Who may read the web console at `/` (`[server] console`). Acting (approve, reject,
/// rollback, freeze, resume) always needs a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleAccess {
    /// `"login"` (default): every page needs a session.
    #[default]
    Login,
    /// `"public"`: pages can be read without a session.
    Public,
    /// `"off"`: no console; `/` answers 404.
    Off,
}

impl ConsoleAccess {
    const CHOICES: &'static str = "\"login\", \"public\" or \"off\"";

    fn parse(text: &str) -> Option<ConsoleAccess> {
        match text {
            "login" => Some(ConsoleAccess::Login),
            "public" => Some(ConsoleAccess::Public),
            "off" => Some(ConsoleAccess::Off),
            _ => None,
        }
    }
}

/// The HTTP server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the API token comes from; `None` disables mutating endpoints.
    pub api_token: Option<SecretSource>,
    /// How people reach this daemon (report links in Slack messages), e.g.
    /// `https://retraind.example.com`.
    pub public_url: Option<String>,
    /// Who may read the web console.
    pub console: ConsoleAccess,
}

impl ServerConfig {
    /// Validate `raw` (the checker is at `server`).
    pub fn from_raw(raw: RawServer, files: Files, c: &mut Checker) -> ServerConfig {
        let text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = text.parse::<SocketAddr>().unwrap_or_else(|_| {
            c.problem(
                "listen",
                format!("`{text}` is not an address; write IP:PORT such as \"{DEFAULT_LISTEN}\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 9464))
        });
        ServerConfig {
            listen,
            api_token: files.secret(
                c,
                "api_token",
                &raw.api_token_file,
                &raw.api_token_env,
                Some("api-token"),
            ),
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
            console: match raw.console.as_deref() {
                None => ConsoleAccess::default(),
                Some(text) => ConsoleAccess::parse(text).unwrap_or_else(|| {
                    c.problem(
                        "console",
                        format!(
                            "`{text}` is not a console setting; write {}",
                            ConsoleAccess::CHOICES
                        ),
                    );
                    ConsoleAccess::default()
                }),
            },
        }
    }
}
