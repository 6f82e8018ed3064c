//! `WWW-Authenticate` challenges (RFC 7235) and bearer token responses (the distribution token
//! spec).
//!
//! A registry tells an anonymous client how to authenticate in its 401 answer:
//! `Basic realm="registry"` (htpasswd setups: send the credentials on every request) or
//! `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"`
//! (fetch a token from the realm, then send it). Parameters are comma-separated, values may be
//! quoted strings holding commas and escaped quotes, and one header may carry several
//! challenges — so a split on `,` is not a parser. This one follows the RFC grammar:
//!
//! ```text
//! challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param = token BWS "=" BWS ( token / quoted-string )
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// One challenge: the scheme (lowercased) and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parse every challenge of one `WWW-Authenticate` header value. Malformed trailing input ends
/// the parse; the challenges read up to there are kept (a registry's header is advisory: the
/// worst case is an unauthorized error, which names the registry).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|c| c == b',' || is_ws(c));
        let scheme = p.token();
        if scheme.is_empty() {
            break;
        }
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        p.skip(is_ws);
        // Parameters until the next challenge (a token not followed by '=') or the end.
        loop {
            p.skip(|c| c == b',' || is_ws(c));
            let save = p.i;
            let name = p.token();
            if name.is_empty() {
                break;
            }
            p.skip(is_ws);
            if !p.eat(b'=') {
                // Not a parameter: the start of the next challenge.
                p.i = save;
                break;
            }
            if p.peek().is_none_or(|c| c == b'=' || c == b',') {
                // token68 (`Negotiate abc==`): not used by registries; skip it.
                p.skip(|c| c == b'=');
                continue;
            }
            p.skip(is_ws);
            let value = if p.peek() == Some(b'"') {
                match p.quoted() {
                    Some(v) => v,
                    None => {
                        out.push(ch);
                        return out;
                    }
                }
            } else {
                p.bare_value().to_string()
            };
            ch.params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(ch);
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.i;
        self.skip(is_tchar);
        // tchars are ASCII, so the slice is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default()
    }

    /// An unquoted value: RFC 7235 says token, but some servers send bare URLs (`realm=https://a/t`),
    /// so accept anything up to the next comma or white space.
    fn bare_value(&mut self) -> &'a str {
        let start = self.i;
        self.skip(|c| c != b',' && !is_ws(c));
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default()
    }

    /// A quoted-string starting at the current `"`; `None` when unterminated.
    fn quoted(&mut self) -> Option<String> {
        self.i += 1;
        let mut v = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some(String::from_utf8_lossy(&v).into_owned()),
                b'\\' => {
                    v.push(self.peek()?);
                    self.i += 1;
                }
                c => v.push(c),
            }
        }
    }
}

fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The answer of a token endpoint. Per the token spec the token is `token`, with
/// `access_token` as the OAuth 2 compatible alias; `expires_in` defaults to 60 seconds.
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A bearer token; never shown in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: String,
    pub lifetime: Duration,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Token {
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Shortest lifetime the spec allows a token server to announce.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl TokenResponse {
    /// The token, or an error message when the response holds none.
    pub fn into_token(self) -> Result<Token, String> {
        let value = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
            .ok_or("the token response has neither \"token\" nor \"access_token\"")?;
        let lifetime = self
            .expires_in
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(Token { value, lifetime })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(h: &str) -> Challenge {
        let v = parse_challenges(h);
        assert_eq!(v.len(), 1, "{h}: {v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn basic_realm() {
        let c = one(r#"Basic realm="ibu-test""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("ibu-test"));
    }

    #[test]
    fn bearer_with_quoted_commas_and_escapes() {
        let c = one(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c.param("service"), Some("registry.example.com"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));

        let c = one(r#"Basic realm="say \"hi\", \\ ok""#);
        assert_eq!(c.param("realm"), Some(r#"say "hi", \ ok"#));
    }

    #[test]
    fn whitespace_case_and_unquoted_values() {
        let c = one("BEARER  Realm = https://a/token , Service=reg ,scope=\"x\"");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://a/token"));
        assert_eq!(c.param("service"), Some("reg"));
        assert_eq!(c.param("scope"), Some("x"));
    }

    #[test]
    fn several_challenges_in_one_header() {
        let v = parse_challenges(
            r#"Negotiate abc==, Basic realm="r1", charset="UTF-8", Bearer realm="https://t/x",service="s""#,
        );
        let schemes: Vec<&str> = v.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["negotiate", "basic", "bearer"]);
        assert!(v[0].params.is_empty());
        assert_eq!(v[1].param("realm"), Some("r1"));
        assert_eq!(v[1].param("charset"), Some("UTF-8"));
        assert_eq!(v[2].param("service"), Some("s"));
    }

    #[test]
    fn scheme_without_params_and_garbage() {
        assert_eq!(one("Basic").params.len(), 0);
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("  ,  ").is_empty());
        // Unterminated quote: keep what was parsed.
        let v = parse_challenges(r#"Bearer realm="https://t", service="unterminated"#);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].param("realm"), Some("https://t"));
        assert_eq!(v[0].param("service"), None);
    }

    #[test]
    fn token_responses() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value(), "abc");
        assert_eq!(t.lifetime, Duration::from_secs(300));

        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"xyz","issued_at":"2024-01-01T00:00:00Z"}"#)
                .unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value(), "xyz");
        assert_eq!(t.lifetime, DEFAULT_TOKEN_LIFETIME);
        assert!(!format!("{t:?}").contains("xyz"));

        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(t.into_token().is_err());
    }
}
