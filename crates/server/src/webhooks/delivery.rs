//! Delivery of signed webhook POSTs: one shared HTTP client, a timeout per attempt, bounded
//! retries with exponential backoff and jitter, and the HMAC-SHA256 signature helpers.
//!
//! [`Delivery::attempt`] makes one attempt; [`Delivery::deliver`] makes attempts until one
//! succeeds, one fails in a way a retry cannot fix, or the [`RetryPolicy`] is exhausted;
//! [`Delivery::resume`] continues the retries of an earlier [`Outcome`] (e.g. in a background
//! task after a first attempt made in line).
//!
//! An attempt succeeds on a `2xx` answer. Transport errors, timeouts, `408`, `429` and `5xx` are
//! retried; any other answer is final. Redirects are not followed.
//!
//! Error texts never contain the URL (its query may hold a key, e.g. `?code=…`); use
//! [`display_url`] to name a receiver in logs.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use sha2::Sha256;

/// The default limit on a response body read by an attempt (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The default timeout of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long establishing a connection to a receiver may take (within the attempt's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often and how fast failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1; 0 counts as 1).
    pub attempts: u32,
    /// The delay before the first retry; each further retry doubles it.
    pub initial_backoff: Duration,
    /// The delay never exceeds this.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// A single attempt, no retry.
    pub const ONCE: Self = Self {
        attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// `attempts` attempts in all, retried after `initial_backoff`, doubling up to `max_backoff`.
    pub const fn new(attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            attempts,
            initial_backoff,
            max_backoff,
        }
    }

    /// Attempts in all (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.attempts.max(1)
    }

    /// The nominal delay before retry `retry` (1 = the first retry):
    /// `initial_backoff × 2^(retry-1)`, capped at `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let factor = 1u32 << exponent;
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff.max(self.initial_backoff))
    }

    /// The delay actually waited before retry `retry`: [`RetryPolicy::backoff`] with "equal
    /// jitter", uniformly between half of it and all of it, so that receivers recovering from an
    /// outage are not hit by every sender at once.
    pub fn delay(&self, retry: u32) -> Duration {
        jittered(self.backoff(retry), random_unit())
    }
}

impl Default for RetryPolicy {
    /// Three attempts, after 1 s then 2 s (±jitter), at most 30 s apart.
    fn default() -> Self {
        Self::new(3, Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// `base` scaled into `[base/2, base]` by `unit` in `[0, 1]`.
fn jittered(base: Duration, unit: f64) -> Duration {
    let half = base / 2;
    half + (base - half).mul_f64(unit.clamp(0.0, 1.0))
}

/// A random number in `[0, 1]` (the clock's nanoseconds if the system has no randomness).
fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default(),
        )
    });
    // 53 random bits: exactly representable.
    #[allow(clippy::cast_precision_loss)]
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

/// One webhook request: a POST of `body` with `headers` to `url`.
#[derive(Clone)]
pub struct WebhookRequest {
    /// The receiver.
    pub url: Url,
    /// Headers (content type, signature, …).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl fmt::Debug for WebhookRequest {
    /// Names the receiver without its query and lists header names only (they may carry
    /// signatures).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("url", &display_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl WebhookRequest {
    /// A POST of `body` to `url`, without headers.
    pub fn new(url: Url, body: impl Into<Bytes>) -> Self {
        Self {
            url,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }
}

/// Why an attempt got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The request could not be sent or the answer not read.
    #[error("{0}")]
    Transport(String),
    /// The answer's body exceeded the limit.
    #[error("the response (status {status}) is larger than {limit} bytes")]
    TooLarge {
        /// The answer's status.
        status: StatusCode,
        /// The limit, bytes.
        limit: usize,
    },
    /// No HTTP client could be built (TLS initialisation failed).
    #[error("no HTTP client: {0}")]
    NoClient(String),
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The receiver answered.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its body (at most the delivery's response limit).
        body: Bytes,
    },
    /// It did not (or its answer was unusable).
    Failed(DeliveryError),
}

impl Attempt {
    /// The answer's status, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Response { status, .. }
            | Self::Failed(DeliveryError::TooLarge { status, .. }) => Some(*status),
            Self::Failed(_) => None,
        }
    }

    /// A `2xx` answer (also when its body was too large to read).
    pub fn is_success(&self) -> bool {
        self.status().is_some_and(|s| s.is_success())
    }

    /// Whether another attempt could get a different answer: transport errors, timeouts,
    /// `408`, `429` and `5xx`.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Response { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Failed(DeliveryError::Timeout(_) | DeliveryError::Transport(_)) => true,
            Self::Failed(DeliveryError::TooLarge { .. } | DeliveryError::NoClient(_)) => false,
        }
    }

    /// A short description for logs and delivery records: `status 204`, `timed out after 30s`, ….
    pub fn describe(&self) -> String {
        match self {
            Self::Response { status, .. } => format!("status {}", status.as_u16()),
            Self::Failed(error) => error.to_string(),
        }
    }
}

/// The result of a delivery: the attempts made, the last one's result, the time taken.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Attempts made (at least 1).
    pub attempts: u32,
    /// The last attempt's result.
    pub last: Attempt,
    /// From the first attempt's start to the last one's end, backoff delays included.
    pub duration: Duration,
}

impl Outcome {
    /// The last answer's status, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.last.status()
    }

    /// The last attempt got a `2xx` answer.
    pub fn is_success(&self) -> bool {
        self.last.is_success()
    }

    /// The last attempt's error, if it got no usable answer.
    pub fn error(&self) -> Option<&DeliveryError> {
        match &self.last {
            Attempt::Failed(error) => Some(error),
            Attempt::Response { .. } => None,
        }
    }
}

/// Sends webhook requests; cheap to clone (all deliveries share one connection pool).
#[derive(Debug, Clone)]
pub struct Delivery {
    timeout: Duration,
    max_response_bytes: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT)
    }
}

impl Delivery {
    /// Deliveries whose attempts each time out after `timeout`, reading at most
    /// [`DEFAULT_MAX_RESPONSE_BYTES`] of a response.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Reads at most `bytes` of a response body; a larger body fails the attempt with
    /// [`DeliveryError::TooLarge`].
    #[must_use]
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One attempt.
    pub async fn attempt(&self, request: &WebhookRequest) -> Attempt {
        let client = match client() {
            Ok(client) => client,
            Err(error) => return Attempt::Failed(DeliveryError::NoClient(error.clone())),
        };
        let sent = client
            .post(request.url.clone())
            .headers(request.headers.clone())
            .body(request.body.clone())
            .timeout(self.timeout)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return Attempt::Failed(self.error(error)),
        };
        let status = response.status();
        let limit = self.max_response_bytes;
        let too_large = Attempt::Failed(DeliveryError::TooLarge { status, limit });
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return too_large;
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return too_large;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => return Attempt::Failed(self.error(error)),
            }
        }
        Attempt::Response {
            status,
            body: Bytes::from(body),
        }
    }

    /// Attempts until one succeeds, one fails for good, or `policy` is exhausted.
    pub async fn deliver(&self, request: &WebhookRequest, policy: &RetryPolicy) -> Outcome {
        let started = Instant::now();
        let first = self.attempt(request).await;
        let outcome = Outcome {
            attempts: 1,
            last: first,
            duration: started.elapsed(),
        };
        self.resume(request, policy, outcome).await
    }

    /// Continues the retries of `previous` (an outcome of the same request), waiting the
    /// policy's delay before each; returns `previous` unchanged when it succeeded, failed for
    /// good or used up the policy's attempts.
    pub async fn resume(
        &self,
        request: &WebhookRequest,
        policy: &RetryPolicy,
        previous: Outcome,
    ) -> Outcome {
        let mut outcome = previous;
        let resumed = Instant::now();
        let before = outcome.duration;
        while !outcome.is_success()
            && outcome.last.is_retryable()
            && outcome.attempts < policy.max_attempts()
        {
            tokio::time::sleep(policy.delay(outcome.attempts)).await;
            outcome.last = self.attempt(request).await;
            outcome.attempts += 1;
            outcome.duration = before + resumed.elapsed();
        }
        outcome
    }

    /// A reqwest error as a delivery error, without the URL.
    fn error(&self, error: reqwest::Error) -> DeliveryError {
        if error.is_timeout() {
            return DeliveryError::Timeout(self.timeout);
        }
        DeliveryError::Transport(error_text(&error.without_url()))
    }
}

/// An error and its causes, `outer: inner: …` (each cause only once).
fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The shared client (built once).
fn client() -> Result<&'static reqwest::Client, &'static String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("signalbox/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|error| error_text(&error))
        })
        .as_ref()
}

/// A URL fit for logs: scheme, host, port and path; no user info, query or fragment.
pub fn display_url(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// `HMAC-SHA256(key, data)` as upper-case hex.
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(data);
    upper_hex(&mac.finalize().into_bytes())
}

/// `sha256=<HEX>` for each key (the UTF-8 bytes of the key string) over the UTF-8 bytes of
/// `data`, joined by `,` without spaces: the Azure SignalR upstream signature format.
pub fn signature_header(keys: &[String], data: &str) -> String {
    keys.iter()
        .map(|key| {
            format!(
                "sha256={}",
                hmac_sha256_hex(key.as_bytes(), data.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `header` (a [`signature_header`] value, from any of the `keys`) carries a valid
/// signature of `data` under one of `keys`; the hex is compared case-insensitively.
pub fn verify_signature(header: &str, keys: &[String], data: &str) -> bool {
    let expected: Vec<String> = keys
        .iter()
        .map(|key| hmac_sha256_hex(key.as_bytes(), data.as_bytes()))
        .collect();
    header.split(',').any(|item| {
        item.trim()
            .strip_prefix("sha256=")
            .is_some_and(|hex| expected.iter().any(|e| constant_eq_ignore_case(e, hex)))
    })
}

/// Compares two ASCII strings case-insensitively in time independent of where they differ.
fn constant_eq_ignore_case(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_uppercase() ^ y.to_ascii_uppercase())
    }) == 0
}

fn upper_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::new(10, Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (1..=6).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.backoff(0), Duration::from_secs(1));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn backoff_cap_below_initial_uses_initial() {
        let policy = RetryPolicy::new(3, Duration::from_secs(2), Duration::ZERO);
        assert_eq!(policy.backoff(3), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let base = Duration::from_millis(1000);
        assert_eq!(jittered(base, 0.0), Duration::from_millis(500));
        assert_eq!(jittered(base, 1.0), Duration::from_millis(1000));
        assert_eq!(jittered(base, 0.5), Duration::from_millis(750));
        let policy = RetryPolicy::new(5, Duration::from_millis(100), Duration::from_secs(1));
        for retry in 1..=5 {
            for _ in 0..50 {
                let delay = policy.delay(retry);
                let nominal = policy.backoff(retry);
                assert!(
                    delay >= nominal / 2 && delay <= nominal,
                    "{delay:?} vs {nominal:?}"
                );
            }
        }
        let unit = random_unit();
        assert!((0.0..=1.0).contains(&unit));
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(
            RetryPolicy::new(0, Duration::ZERO, Duration::ZERO).max_attempts(),
            1
        );
        assert_eq!(RetryPolicy::ONCE.max_attempts(), 1);
    }

    #[test]
    fn signature_matches_known_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
        );
        let keys = vec!["Jefe".to_owned(), "other".to_owned()];
        let header = signature_header(&keys, "what do ya want for nothing?");
        let (primary, secondary) = header.split_once(',').unwrap();
        assert_eq!(
            primary,
            "sha256=5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
        );
        assert_eq!(
            secondary,
            format!(
                "sha256={}",
                hmac_sha256_hex(b"other", b"what do ya want for nothing?")
            )
        );
        assert!(!header.contains(' '));
    }

    #[test]
    fn signature_verification() {
        let keys = vec!["primary-key".to_owned(), "secondary-key".to_owned()];
        let header = signature_header(&keys, "conn-1");
        assert!(verify_signature(&header, &keys, "conn-1"));
        assert!(verify_signature(
            &header.to_lowercase(),
            &keys[1..],
            "conn-1"
        ));
        assert!(!verify_signature(&header, &keys, "conn-2"));
        assert!(!verify_signature(
            &header,
            &["another".to_owned()],
            "conn-1"
        ));
        assert!(!verify_signature("", &keys, "conn-1"));
        assert_eq!(signature_header(&[], "x"), "");
    }

    #[test]
    fn display_url_drops_query_and_credentials() {
        let url =
            Url::parse("https://user:pw@example.com:8443/runtime/webhooks/signalr?code=secret#f")
                .unwrap();
        assert_eq!(
            display_url(&url),
            "https://example.com:8443/runtime/webhooks/signalr"
        );
        let request = WebhookRequest::new(url, "body");
        assert!(!format!("{request:?}").contains("secret"));
    }

    #[test]
    fn retryable_classification() {
        let answer = |code: u16| Attempt::Response {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::new(),
        };
        assert!(answer(200).is_success());
        assert!(!answer(200).is_retryable());
        assert!(answer(503).is_retryable());
        assert!(answer(429).is_retryable());
        assert!(answer(408).is_retryable());
        assert!(!answer(404).is_retryable());
        assert!(!answer(403).is_retryable());
        assert!(Attempt::Failed(DeliveryError::Transport("refused".into())).is_retryable());
        let too_large = Attempt::Failed(DeliveryError::TooLarge {
            status: StatusCode::OK,
            limit: 1,
        });
        assert!(too_large.is_success());
        assert!(!too_large.is_retryable());
    }

    #[tokio::test]
    async fn unreachable_receiver_is_retried_then_reported() {
        // A port that was just free: connections are refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/hook?code=secret")).unwrap();
        let request = WebhookRequest::new(url, "{}");
        let policy = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(2));
        let outcome = Delivery::new(Duration::from_secs(5))
            .deliver(&request, &policy)
            .await;
        assert_eq!(outcome.attempts, 3);
        assert!(!outcome.is_success());
        let error = outcome.error().unwrap().to_string();
        assert!(!error.contains("secret"), "{error}");
        assert!(!error.contains("127.0.0.1"), "{error}");
    }
}
