//! libpq connection strings, keyword/value or URL, as ordered key/value pairs: repctl connects with
//! them and turns `peer_dsn` into foreign-server and user-mapping options.

use std::fmt;

use anyhow::{Result, bail};

/// Whether a connection option is a secret, masked wherever it is shown.
pub fn is_secret(key: &str) -> bool {
    matches!(key, "password" | "sslpassword")
}

/// Keys that belong to the user mapping (who logs in), not to the foreign server (where).
/// (libpq marks password and sslpassword secret; dblink takes them only in user mappings.)
const USER_MAPPING_KEYS: [&str; 3] = ["user", "password", "sslpassword"];

#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pairs: Vec<(String, String)>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Displays as keyword/value with the password masked: safe for messages and logs.
impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .pairs
            .iter()
            .map(|(k, v)| {
                if is_secret(k) {
                    format!("{k}=********")
                } else {
                    format!("{k}={}", quote(v))
                }
            })
            .collect();
        write!(f, "{}", shown.join(" "))
    }
}

impl ConnInfo {
    pub fn parse(text: &str) -> Result<ConnInfo> {
        let text = text.trim();
        let pairs = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            parse_url(text)?
        } else {
            parse_keyword_value(text)?
        };
        Ok(ConnInfo { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_string(), value.to_string()));
    }

    /// Drops every value of `key`, returning the last one.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let last = self.get(key).map(str::to_string);
        self.pairs.retain(|(k, _)| k != key);
        last
    }

    /// The full keyword/value string, password included: only for handing to a driver.
    pub fn to_secret_string(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Options for the foreign server: everything but who logs in.
    pub fn server_options(&self) -> Vec<(String, String)> {
        let mut options: Vec<(String, String)> = self
            .pairs
            .iter()
            .filter(|(k, _)| !USER_MAPPING_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        // A peer that is down must not hang a writer's commit for long.
        if self.get("connect_timeout").is_none() {
            options.push(("connect_timeout".into(), "5".into()));
        }
        if self.get("application_name").is_none() {
            options.push(("application_name".into(), "repctl".into()));
        }
        options.sort();
        options
    }

    /// Options for the user mapping: user and password.
    pub fn user_mapping_options(&self) -> Vec<(String, String)> {
        USER_MAPPING_KEYS
            .iter()
            .filter_map(|k| self.get(k).map(|v| (k.to_string(), v.to_string())))
            .collect()
    }
}

/// Quotes a keyword/value value where libpq would otherwise split or unescape it.
pub(crate) fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn parse_keyword_value(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            bail!("missing \"=\" after {key:?} in connection string");
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("unterminated quoted value for {key:?} in connection string"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn parse_url(text: &str) -> Result<Vec<(String, String)>> {
    let rest = text.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let mut pairs = Vec::new();
    if !userinfo.is_empty() {
        let (user, password) = userinfo
            .split_once(':')
            .map_or((userinfo, None), |(u, p)| (u, Some(p)));
        pairs.push(("user".into(), decode(user)?));
        if let Some(p) = password {
            pairs.push(("password".into(), decode(p)?));
        }
    }
    if !hostport.is_empty() {
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
                (h, after.strip_prefix(':'))
            }
            None => hostport
                .split_once(':')
                .map_or((hostport, None), |(h, p)| (h, Some(p))),
        };
        if !host.is_empty() {
            pairs.push(("host".into(), decode(host)?));
        }
        if let Some(p) = port {
            pairs.push(("port".into(), decode(p)?));
        }
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".into(), decode(dbname)?));
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = param.split_once('=') else {
            bail!("URL parameter {param:?} has no \"=\"");
        };
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok(pairs)
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                bail!("bad percent-escape in {s:?}")
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_value_with_quotes() {
        let c = ConnInfo::parse(r"host=/tmp/s port=5441 dbname='my db' password='it\'s'").unwrap();
        assert_eq!(c.get("dbname"), Some("my db"));
        assert_eq!(c.get("password"), Some("it's"));
        assert!(!c.to_string().contains("it's"));
        assert_eq!(ConnInfo::parse(&c.to_secret_string()).unwrap(), c);
    }

    #[test]
    fn url_form() {
        let c = ConnInfo::parse("postgresql://remote:p%40ss@10.1.2.3:5441/remote?sslmode=require")
            .unwrap();
        assert_eq!(c.get("user"), Some("remote"));
        assert_eq!(c.get("password"), Some("p@ss"));
        assert_eq!(c.get("host"), Some("10.1.2.3"));
        assert_eq!(c.get("port"), Some("5441"));
        assert_eq!(c.get("dbname"), Some("remote"));
        assert_eq!(c.get("sslmode"), Some("require"));
    }

    #[test]
    fn server_and_mapping_options_split() {
        let c = ConnInfo::parse("host=h dbname=d user=u password=p").unwrap();
        let server: Vec<_> = c.server_options().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            server,
            ["application_name", "connect_timeout", "dbname", "host"]
        );
        assert_eq!(
            c.user_mapping_options(),
            [("user".into(), "u".into()), ("password".into(), "p".into())]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ConnInfo::parse("host").is_err());
        assert!(ConnInfo::parse("host='x").is_err());
    }
}
