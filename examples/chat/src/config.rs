//! Configuration: the allowed origins, the admin token and the limits, from the environment or
//! set in code (the tests use small limits).

use std::time::Duration;

/// Everything [`build`](crate::build) needs besides the handlers.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Origins allowed to open a WebSocket (`WSU_ORIGINS`, comma-separated). Empty: the wsu
    /// default, the page's own origin (plus clients that send no `Origin`, like the command-line
    /// clients). A list replaces that default, so include the page's origin in it; `*` allows
    /// every origin.
    pub origins: Vec<String>,
    /// The token an admin must present to join `/admin` (`CHAT_ADMIN_TOKEN`). `None` (or empty):
    /// the admin namespace refuses everyone.
    pub admin_token: Option<String>,
    /// The bounds of the chat.
    pub limits: Limits,
}

impl Config {
    /// Read `WSU_ORIGINS` and `CHAT_ADMIN_TOKEN`; the limits are the defaults.
    pub fn from_env() -> Config {
        Config::from_vars(
            std::env::var("WSU_ORIGINS").ok().as_deref(),
            std::env::var("CHAT_ADMIN_TOKEN").ok().as_deref(),
        )
    }

    /// The configuration for these values of `WSU_ORIGINS` and `CHAT_ADMIN_TOKEN`.
    pub fn from_vars(origins: Option<&str>, admin_token: Option<&str>) -> Config {
        let origins = origins
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let admin_token = admin_token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Config {
            origins,
            admin_token,
            limits: Limits::default(),
        }
    }
}

/// The bounds of the chat. Nickname and room name rules are fixed (see the crate docs); these
/// are the sizes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rooms on the server at once (a room exists while someone is in it). Default 64.
    pub max_rooms: usize,
    /// Rooms one user may be in. Default 8.
    pub max_rooms_per_user: usize,
    /// Members of one room. Default 256.
    pub max_members_per_room: usize,
    /// Messages a room remembers and sends to joiners. Default 50.
    pub history: usize,
    /// Longest message, in characters. Default 2000.
    pub max_message_chars: usize,
    /// A user's "is typing" signal is relayed at most once per interval and room. Default 1 s.
    pub typing_interval: Duration,
    /// Open WebSocket connections (further upgrade requests get 503). Default 1024.
    pub max_connections: usize,
    /// Requests per second and burst per connection (wsu's rate limit). Default 20 / 40.
    pub rate_limit: (f64, f64),
    /// How long the session of a dropped connection waits for its client to resume it
    /// (wsu's [`Recovery::session_ttl`](wsu::Recovery::session_ttl)); the user keeps its
    /// nickname and rooms meanwhile. Default 2 min.
    pub session_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 64,
            max_rooms_per_user: 8,
            max_members_per_room: 256,
            history: 50,
            max_message_chars: 2000,
            typing_interval: Duration::from_secs(1),
            max_connections: 1024,
            rate_limit: (20.0, 40.0),
            session_ttl: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_trimmed_and_empty_ones_ignored() {
        let c = Config::from_vars(Some(" http://a.test , ,https://b.test"), Some("  "));
        assert_eq!(c.origins, ["http://a.test", "https://b.test"]);
        assert_eq!(c.admin_token, None);
        let c = Config::from_vars(None, Some(" s3cret "));
        assert!(c.origins.is_empty());
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
    }
}
