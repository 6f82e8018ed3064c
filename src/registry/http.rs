//! One registry endpoint over HTTP: authentication, redirects, byte counting.
//!
//! - **Auth** follows the distribution spec: `GET /v2/` anonymously; a 401 carries the
//!   `WWW-Authenticate` challenge. `Basic` → send the credentials with every request. `Bearer` →
//!   fetch a token from the realm (`?service=...&scope=repository:<repo>:pull`, with the
//!   credentials as Basic auth when there are any), cache it for its lifetime, send it. A 401
//!   later on (an expired token, a registry that only challenges per repository) updates the
//!   state from that answer's challenge and retries once; a second 401 is
//!   [`RegistryError::Unauthorized`].
//! - **Redirects** are followed here, not by ureq: registries behind object stores or CDNs
//!   answer blob GETs with a 307 to a signed URL on another host. Every hop keeps the request's
//!   headers (notably `Range`) but the registry's `Authorization` goes only to the registry's
//!   own origin (scheme, host and port), never to the redirect target.
//! - **Counting**: every response body byte read goes through [`ByteCounter`], the number the
//!   "bytes a target downloads" benchmark reports (bodies only: headers and TLS overhead are
//!   not counted).
//! - **Secrets** stay out of logs: URLs are logged without their query (signed CDN URLs), no
//!   header is logged, and the `log` crate's trace level — where ureq dumps the bytes on the
//!   wire, `Authorization` included — is compiled out (`log`'s `max_level_debug` feature);
//!   ureq's debug records redact all but harmless headers.
//! - **Keep-alive**: ureq pools connections and reuses one when the previous body was read to
//!   the end, so small error bodies are drained rather than dropped.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::Body;
use ureq::http::Response;

use super::auth::Credentials;
use super::challenge::{Challenge, Token, TokenResponse, parse_challenges};
use super::error::{RegistryError, classify};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// Largest error body read (to keep the connection reusable); longer ones are dropped.
const MAX_DRAIN: u64 = 64 << 10;
/// Largest token response accepted.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// Bytes of response bodies downloaded; shared by a client and the readers it hands out.
#[derive(Debug, Clone, Default)]
pub struct ByteCounter(Arc<AtomicU64>);

impl ByteCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A reader that adds what it reads to a [`ByteCounter`].
pub(crate) struct Counting<R> {
    inner: R,
    counter: ByteCounter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.add(n as u64);
        Ok(n)
    }
}

#[derive(Debug, Default)]
enum AuthState {
    /// No challenge seen: requests go out anonymously.
    #[default]
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: String,
        token: Option<(Token, Instant)>,
    },
}

/// The HTTP side of a [`super::Client`].
pub(crate) struct Transport {
    pub agent: ureq::Agent,
    /// `scheme://host[:port]` of the registry API.
    pub origin: String,
    /// The registry as the image reference names it (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// The repository path (`ibu/seed`).
    pub repository: String,
    pub creds: Option<Credentials>,
    pub authfile: Option<PathBuf>,
    /// The CA directory of `--cert-dir`, else the certs.d root (a host's directory is below it).
    pub cert_dir: Option<PathBuf>,
    pub certs_d: PathBuf,
    auth: Mutex<AuthState>,
    pub counter: ByteCounter,
    requests: AtomicU64,
}

impl Transport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent: ureq::Agent,
        origin: String,
        registry: String,
        repository: String,
        creds: Option<Credentials>,
        authfile: Option<PathBuf>,
        cert_dir: Option<PathBuf>,
        certs_d: PathBuf,
        counter: ByteCounter,
    ) -> Transport {
        Transport {
            agent,
            origin,
            registry,
            repository,
            creds,
            authfile,
            cert_dir,
            certs_d,
            auth: Mutex::new(AuthState::Anonymous),
            counter,
            requests: AtomicU64::new(0),
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where a CA for the host of `url` is read from (for messages).
    pub fn ca_dir_for(&self, url: &str) -> PathBuf {
        match &self.cert_dir {
            Some(d) => d.clone(),
            None => self.certs_d.join(authority_of(url)),
        }
    }

    /// `GET /v2/` anonymously: checks that a registry answers and learns its challenge.
    pub fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.origin);
        let (resp, _) = self.send(&url, &[], None)?;
        match resp.status().as_u16() {
            200 => {
                self.drain(resp);
                Ok(())
            }
            401 => {
                let challenges = challenges_of(&resp);
                self.drain(resp);
                self.adopt(&challenges);
                Ok(())
            }
            404 => Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!(
                    "{url} answered 404: this server does not offer the registry API v2"
                ),
            }),
            _ => Err(self.status_error(resp, "the API version check (GET /v2/)")),
        }
    }

    /// GET `path` (starting with `/v2/`) on the registry with authentication, following
    /// redirects. Any status other than 401 is the caller's to interpret.
    pub fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Body>, RegistryError> {
        let url = format!("{}{path}", self.origin);
        let mut retried = false;
        loop {
            let (auth, fresh) = self.auth_header()?;
            let (resp, final_url) = self.send(&url, headers, auth.as_deref())?;
            if resp.status() != 401 || origin_of(&final_url) != self.origin {
                return Ok(resp);
            }
            let challenges = challenges_of(&resp);
            self.drain(resp);
            if retried || !self.should_retry(&challenges, fresh) {
                return Err(self.unauthorized());
            }
            retried = true;
        }
    }

    pub fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            user: self.creds.as_ref().map(|c| c.username().to_string()),
            authfile: self.authfile.clone(),
        }
    }

    /// Take the first usable challenge (Bearer preferred) as the auth state.
    fn adopt(&self, challenges: &[Challenge]) {
        let mut state = self.lock();
        if let Some(new) = self.state_for(challenges) {
            *state = new;
        }
    }

    fn state_for(&self, challenges: &[Challenge]) -> Option<AuthState> {
        let default_scope = format!("repository:{}:pull", self.repository);
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = b.param("realm")?.to_string();
            return Some(AuthState::Bearer {
                realm,
                service: b.param("service").map(str::to_string),
                scope: b.param("scope").map_or(default_scope, str::to_string),
                token: None,
            });
        }
        challenges
            .iter()
            .any(|c| c.scheme == "basic")
            .then_some(AuthState::Basic)
    }

    /// After a 401: adopt its challenge; is another try worth it? `fresh`: the refused request
    /// carried a token fetched for it.
    fn should_retry(&self, challenges: &[Challenge], fresh: bool) -> bool {
        let Some(new) = self.state_for(challenges) else {
            return false;
        };
        let mut state = self.lock();
        let retry = match (&*state, &new) {
            // Credentials were already sent and refused.
            (AuthState::Basic, AuthState::Basic) => false,
            (_, AuthState::Basic) => self.creds.is_some(),
            // A token asked for a moment ago was refused: only a new scope can help.
            (AuthState::Bearer { scope: old, .. }, AuthState::Bearer { scope: wanted, .. })
                if fresh =>
            {
                old != wanted
            }
            // A cached token may have expired or been revoked: fetch a new one.
            (_, AuthState::Bearer { .. }) => true,
            _ => false,
        };
        *state = new;
        retry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `Authorization` value for the next request, and whether a token was fetched for it.
    fn auth_header(&self) -> Result<(Option<String>, bool), RegistryError> {
        let (realm, service, scope) = {
            let state = self.lock();
            match &*state {
                AuthState::Anonymous => return Ok((None, false)),
                AuthState::Basic => {
                    return Ok((self.creds.as_ref().map(Credentials::basic_header), false));
                }
                AuthState::Bearer {
                    token: Some((t, expires)),
                    ..
                } if Instant::now() < *expires => {
                    return Ok((Some(format!("Bearer {}", t.value())), false));
                }
                AuthState::Bearer {
                    realm,
                    service,
                    scope,
                    ..
                } => (realm.clone(), service.clone(), scope.clone()),
            }
        };
        let token = self.fetch_token(&realm, service.as_deref(), &scope)?;
        let header = format!("Bearer {}", token.value());
        // Renew a little before the server's expiry.
        let margin = (token.lifetime / 10).min(Duration::from_secs(10));
        let expires = Instant::now() + token.lifetime - margin;
        if let AuthState::Bearer { token: slot, .. } = &mut *self.lock() {
            *slot = Some((token, expires));
        }
        Ok((Some(header), true))
    }

    /// The token flow: `GET realm?service=...&scope=...`, Basic credentials if any.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        let mut req = self.agent.get(realm);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        req = req.query("scope", scope);
        if let Some(c) = &self.creds {
            req = req.header("Authorization", c.basic_header());
        }
        tracing::debug!(realm, scope, "fetching a registry token");
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req
            .call()
            .map_err(|e| classify(e, realm, &self.ca_dir_for(realm)))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                self.drain(resp);
                return Err(self.unauthorized());
            }
            _ => return Err(self.status_error(resp, "the token request")),
        }
        let body = self.read_body(resp, MAX_TOKEN_RESPONSE, "the token response")?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("the token server {realm} answered with invalid JSON: {e}"),
            })?;
        parsed
            .into_token()
            .map_err(|detail| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("token server {realm}: {detail}"),
            })
    }

    /// One GET following redirects; `auth` goes only to the registry's origin. Returns the
    /// response and the URL that gave it.
    pub fn send(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&str>,
    ) -> Result<(Response<Body>, String), RegistryError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(a) = auth.filter(|_| origin_of(&url) == self.origin) {
                req = req.header("Authorization", a);
            }
            tracing::debug!(url = without_query(&url), "registry GET");
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = req
                .call()
                .map_err(|e| classify(e, &url, &self.ca_dir_for(&url)))?;
            let location = resp
                .status()
                .is_redirection()
                .then(|| resp.headers().get("location"))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match location {
                Some(loc) => {
                    self.drain(resp);
                    url = resolve_location(&url, &loc);
                }
                None => return Ok((resp, url)),
            }
        }
        Err(RegistryError::Protocol {
            registry: self.registry.clone(),
            detail: format!(
                "more than {MAX_REDIRECTS} redirects, last to {}",
                without_query(&url)
            ),
        })
    }

    /// A reader over a response body that counts what it reads.
    pub fn body_reader(&self, resp: Response<Body>) -> Counting<ureq::BodyReader<'static>> {
        Counting {
            inner: resp.into_body().into_reader(),
            counter: self.counter.clone(),
        }
    }

    /// Read a whole body of at most `limit` bytes.
    pub fn read_body(
        &self,
        resp: Response<Body>,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        let mut reader = self.body_reader(resp).take(limit + 1);
        reader
            .read_to_end(&mut out)
            .map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("reading {what} failed after {} bytes: {e}", out.len()),
            })?;
        if out.len() as u64 > limit {
            return Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("{what} is larger than {limit} bytes"),
            });
        }
        Ok(out)
    }

    /// Read and discard a (small) body so the connection can be reused.
    pub fn drain(&self, resp: Response<Body>) {
        let mut reader = self.body_reader(resp).take(MAX_DRAIN);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    }

    /// The error for an unexpected status; reads the registry's own message from the body.
    pub fn status_error(&self, resp: Response<Body>, operation: &str) -> RegistryError {
        let status = resp.status().as_u16();
        let (_, message) = self.error_body(resp);
        if status == 401 {
            return self.unauthorized();
        }
        if status == 403 {
            return RegistryError::Denied {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                user: self.creds.as_ref().map(|c| c.username().to_string()),
            };
        }
        RegistryError::Status {
            registry: self.registry.clone(),
            operation: operation.to_string(),
            status,
            message,
        }
    }

    /// The error codes and messages of a distribution error body
    /// (`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`).
    pub fn error_body(&self, resp: Response<Body>) -> (Vec<String>, String) {
        #[derive(serde::Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<ErrorEntry>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let body = self
            .read_body(resp, MAX_DRAIN, "the error response")
            .unwrap_or_default();
        match serde_json::from_slice::<Errors>(&body) {
            Ok(e) => {
                let codes = e.errors.iter().map(|e| e.code.clone()).collect();
                let messages: Vec<String> = e
                    .errors
                    .into_iter()
                    .map(|e| e.message)
                    .filter(|m| !m.is_empty())
                    .collect();
                (codes, messages.join("; "))
            }
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                let short: String = text.chars().take(200).collect();
                (Vec::new(), short)
            }
        }
    }
}

fn challenges_of(resp: &Response<Body>) -> Vec<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// A URL without its query: redirect targets of CDNs carry signatures there, which are
/// credentials of a kind and stay out of logs and messages.
pub(crate) fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// `host[:port]` of a URL.
fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// `scheme://host[:port]` of a URL, lowercased, default ports dropped.
pub(crate) fn origin_of(url: &str) -> String {
    let scheme = url
        .split_once("://")
        .map_or("https", |(s, _)| s)
        .to_ascii_lowercase();
    let authority = authority_of(url).to_ascii_lowercase();
    let authority = match (
        scheme.as_str(),
        authority.strip_suffix(":443"),
        authority.strip_suffix(":80"),
    ) {
        ("https", Some(a), _) => a.to_string(),
        ("http", _, Some(a)) => a.to_string(),
        _ => authority,
    };
    format!("{scheme}://{authority}")
}

/// The absolute URL a `Location` header points to, relative to `base`.
pub(crate) fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.split_once("://").map_or("https", |(s, _)| s);
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let origin = format!("{scheme}://{}", authority_of(base));
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = base[origin.len()..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{origin}{dir}/{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve() {
        let base = "https://reg.local:5000/v2/a/b/blobs/sha256:x?y=1";
        assert_eq!(
            resolve_location(base, "https://cdn.example/obj?sig=1"),
            "https://cdn.example/obj?sig=1"
        );
        assert_eq!(
            resolve_location(base, "//cdn.example/o"),
            "https://cdn.example/o"
        );
        assert_eq!(
            resolve_location(base, "/v2/other"),
            "https://reg.local:5000/v2/other"
        );
        assert_eq!(
            resolve_location(base, "c/d"),
            "https://reg.local:5000/v2/a/b/blobs/c/d"
        );
    }

    #[test]
    fn queries_stay_out_of_logged_urls() {
        assert_eq!(
            without_query("https://cdn.example/o?X-Amz-Signature=abc"),
            "https://cdn.example/o"
        );
        assert_eq!(without_query("https://r/v2/#frag"), "https://r/v2/");
        assert_eq!(without_query("https://r/v2/"), "https://r/v2/");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(origin_of("https://Reg.local:443/v2/"), "https://reg.local");
        assert_eq!(origin_of("http://reg.local:80/x"), "http://reg.local");
        assert_eq!(
            origin_of("https://reg.local:5000/x"),
            "https://reg.local:5000"
        );
        assert_ne!(
            origin_of("http://reg.local:5000/x"),
            origin_of("https://reg.local:5000/")
        );
        assert_ne!(
            origin_of("https://127.0.0.2:5000/x"),
            origin_of("https://127.0.0.1:5000/")
        );
        assert_eq!(authority_of("https://[fd00::1]:5000/v2/"), "[fd00::1]:5000");
    }
}
