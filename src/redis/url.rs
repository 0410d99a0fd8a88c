//! `redis://[user:pass@]host[:port][/db]`: where a Redis server is and how to log in.
//!
//! The password never leaves this type except on the wire: [`RedisUrl`]'s `Debug` and
//! `Display` print `***` in its place, and no [`RedisError`] text contains it.

use std::fmt;

use super::RedisError;

/// Redis's port when the URL names none.
const DEFAULT_PORT: u16 = 6379;

/// A parsed `redis://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port; 6379 when absent.
    pub port: u16,
    /// ACL user name (Redis 6+); `None` logs in as `default` when there is a password.
    pub username: Option<String>,
    /// Password sent with `AUTH`; `None` sends no `AUTH`.
    pub password: Option<String>,
    /// Database selected on command connections (`SELECT`); 0 when absent. Pub/sub ignores it,
    /// as Redis does.
    pub db: u32,
}

impl RedisUrl {
    /// Parses `redis://[user:pass@]host[:port][/db]`. User and password may be
    /// percent-encoded; `redis://:pass@host` is a password without a user; an IPv6 host is
    /// written in brackets (`redis://[::1]:6380`).
    ///
    /// # Errors
    /// [`RedisError::InvalidUrl`] naming the part that is wrong (never echoing the text, which
    /// may hold a password).
    pub fn parse(text: &str) -> Result<Self, RedisError> {
        let rest = text
            .strip_prefix("redis://")
            .ok_or(RedisError::InvalidUrl("it does not start with redis://"))?;
        if rest.contains(['?', '#']) {
            return Err(RedisError::InvalidUrl(
                "query strings and fragments are not supported",
            ));
        }
        // The last '@' ends the credentials: a raw '@' in a password is common.
        let (credentials, location) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => {
                let (user, password) = match credentials.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (credentials, None),
                };
                let user = percent_decode(user)?;
                let password = password.map(percent_decode).transpose()?;
                match (user.is_empty(), password) {
                    // `redis://user@host`: Redis has no password-less AUTH, so a lone name is
                    // taken as the password, as redis-cli and most clients do.
                    (false, None) => (None, Some(user)),
                    (true, password) => (None, password.filter(|p| !p.is_empty())),
                    (false, Some(password)) => (Some(user), Some(password)),
                }
            }
        };
        let (authority, db) = match location.split_once('/') {
            None => (location, 0),
            Some((authority, "")) => (authority, 0),
            Some((authority, db)) => (
                authority,
                db.parse()
                    .map_err(|_| RedisError::InvalidUrl("the database is not a number"))?,
            ),
        };
        let (host, port) = split_host_port(authority)?;
        Ok(Self {
            host,
            port,
            username,
            password,
            db,
        })
    }

    /// `host:port`, for connecting (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.username, &self.password) {
            (Some(user), _) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.address(), self.db)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// Splits `host[:port]` (or `[v6][:port]`).
fn split_host_port(authority: &str) -> Result<(String, u16), RedisError> {
    let parse_port = |port: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or(RedisError::InvalidUrl(
                "the port is not a number from 1 to 65535",
            ))
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or(RedisError::InvalidUrl("an IPv6 host has no closing ]"))?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => parse_port(
                after
                    .strip_prefix(':')
                    .ok_or(RedisError::InvalidUrl("text follows the IPv6 host"))?,
            )?,
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, parse_port(port)?),
            None => (authority, DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err(RedisError::InvalidUrl("the host is missing"));
    }
    Ok((host.to_owned(), port))
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, RedisError> {
    const BAD: RedisError = RedisError::InvalidUrl("the user or password has a bad % escape");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes.get(index + 1..index + 3).ok_or(BAD)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BAD)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| BAD)?);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, user: Option<&str>, pass: Option<&str>, db: u32) -> RedisUrl {
        RedisUrl {
            host: host.into(),
            port,
            username: user.map(Into::into),
            password: pass.map(Into::into),
            db,
        }
    }

    #[test]
    fn host_port_and_database_are_read_with_defaults() {
        let cases = [
            ("redis://localhost", url("localhost", 6379, None, None, 0)),
            ("redis://localhost/", url("localhost", 6379, None, None, 0)),
            (
                "redis://10.0.0.1:6380",
                url("10.0.0.1", 6380, None, None, 0),
            ),
            ("redis://cache:7000/3", url("cache", 7000, None, None, 3)),
            ("redis://[::1]:6390/1", url("::1", 6390, None, None, 1)),
            ("redis://[::1]", url("::1", 6379, None, None, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(RedisUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn credentials_are_a_user_and_password_or_a_password_alone() {
        let cases = [
            ("redis://:s3cret@h", url("h", 6379, None, Some("s3cret"), 0)),
            (
                "redis://app:s3cret@h:1/2",
                url("h", 1, Some("app"), Some("s3cret"), 2),
            ),
            ("redis://s3cret@h", url("h", 6379, None, Some("s3cret"), 0)),
            (
                "redis://app:p%40ss%3Aw@h",
                url("h", 6379, Some("app"), Some("p@ss:w"), 0),
            ),
            (
                "redis://app:p@ss@h",
                url("h", 6379, Some("app"), Some("p@ss"), 0),
            ),
            ("redis://:@h", url("h", 6379, None, None, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(RedisUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_urls_are_refused_without_echoing_them() {
        for text in [
            "http://h",
            "redis://",
            "redis://:pw@",
            "redis://h:0",
            "redis://h:65536",
            "redis://h:port",
            "redis://h/db",
            "redis://h/-1",
            "redis://[::1",
            "redis://[::1]x",
            "redis://u:p%zz@h",
            "redis://u:p%4@h",
            "redis://h?timeout=1",
        ] {
            let error = RedisUrl::parse(text).unwrap_err();
            assert!(matches!(error, RedisError::InvalidUrl(_)), "{text}");
            assert!(!error.to_string().contains(text), "{error}");
        }
    }

    #[test]
    fn printing_a_url_hides_its_password() {
        let parsed = RedisUrl::parse("redis://app:hunter2@h:1/2").unwrap();
        assert_eq!(parsed.to_string(), "redis://app:***@h:1/2");
        assert!(!format!("{parsed:?}").contains("hunter2"));
        let parsed = RedisUrl::parse("redis://:hunter2@[::1]").unwrap();
        assert_eq!(parsed.to_string(), "redis://:***@[::1]:6379/0");
    }
}
