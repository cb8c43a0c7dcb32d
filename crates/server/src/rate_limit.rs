//! Rate limits on the endpoints an attacker can hammer without credentials:
//!
//! * **per IP on the sign-in endpoints** (`POST /api/auth/login`, `/register`, `/refresh`,
//!   `/external`): one token bucket per client address shared by the four (burst
//!   `rate_limit.auth_burst`, refilled at `rate_limit.auth_per_second`);
//! * **per account on login**: after `rate_limit.login_failures` failed attempts for one user
//!   name, further attempts for it are refused for `rate_limit.login_backoff`, doubling with each
//!   further failure up to `rate_limit.login_backoff_max`; a successful login resets it. Attempts
//!   are counted when they start, so parallel guesses cannot slip past the threshold while the
//!   password hashes are computed. The backoff is bounded, so an attacker can slow a user's
//!   sign-in down but not lock the account;
//! * **per IP on hub negotiate** (`POST /hubs/…/negotiate`): burst `rate_limit.negotiate_burst`,
//!   refilled at `rate_limit.negotiate_per_second`.
//!
//! A refused request gets `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up)
//! and the API's JSON error body (`{"error":"rate_limited",…}`), and is counted in
//! `signalbox_rate_limited_total{endpoint}`. The client address is the TCP peer, or with
//! `trusted_proxies` the address such a proxy forwarded (see [`crate::client_ip`]); IPv6 clients
//! are limited per /64.
//!
//! Memory stays bounded under address spraying: each table holds at most
//! [`MAX_TRACKED`] entries; entries that carry no information any more (a full bucket, an
//! account whose failures are forgotten) are swept every [`SWEEP_INTERVAL`] and whenever the
//! table is full; addresses that still find no room share one overflow bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::auth::accounts::validate_name;
use crate::client_ip::{TrustedProxies, peer_addr, rate_limit_key};
use crate::config::RateLimitConfig;

/// Requests refused by a rate limit, by `endpoint` (`login`, `register`, `refresh`, `external`,
/// `login_account`, `negotiate`).
pub const RATE_LIMITED: &str = "signalbox_rate_limited_total";

/// Every `endpoint` label of [`RATE_LIMITED`] (registered at zero by
/// [`crate::ops::metrics::register`]).
pub const ENDPOINTS: &[&str] = &[
    "login",
    "register",
    "refresh",
    "external",
    "login_account",
    "negotiate",
];

/// Most entries one table keeps (addresses or accounts).
pub const MAX_TRACKED: usize = 100_000;

/// How often idle entries are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Shortest interval between sweeps forced by a full table (a sweep walks the whole table).
const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Longest `Retry-After` ever computed (guards the float arithmetic).
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: f64, per_second: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, now: Instant, burst: f64, per_second: f64) -> Result<(), Duration> {
        self.refill(now, burst, per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(seconds((1.0 - self.tokens) / per_second))
        }
    }

    /// Whether the bucket would be full at `now` (then it is the same as no entry).
    fn idle(&self, now: Instant, burst: f64, per_second: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * per_second >= burst
    }
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

/// Token buckets keyed by client address, bounded in number.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    burst: f64,
    per_second: f64,
    capacity: usize,
    state: Mutex<BucketsState<K>>,
}

#[derive(Debug)]
struct BucketsState<K> {
    buckets: HashMap<K, Bucket>,
    overflow: Bucket,
    last_sweep: Instant,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// Buckets of `burst` tokens refilled at `per_second`, at most `capacity` of them.
    pub fn new(burst: u32, per_second: f64, capacity: usize) -> Self {
        let now = Instant::now();
        Self {
            burst: f64::from(burst),
            per_second,
            capacity,
            state: Mutex::new(BucketsState {
                buckets: HashMap::new(),
                overflow: Bucket::full(f64::from(burst), now),
                last_sweep: now,
            }),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let (burst, per_second) = (self.burst, self.per_second);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since_sweep = now.saturating_duration_since(state.last_sweep);
        let full = state.buckets.len() >= self.capacity && !state.buckets.contains_key(key);
        if since_sweep >= SWEEP_INTERVAL || (full && since_sweep >= FULL_SWEEP_INTERVAL) {
            state
                .buckets
                .retain(|_, bucket| !bucket.idle(now, burst, per_second));
            state.last_sweep = now;
        }
        if let Some(bucket) = state.buckets.get_mut(key) {
            return bucket.take(now, burst, per_second);
        }
        if state.buckets.len() >= self.capacity {
            return state.overflow.take(now, burst, per_second);
        }
        let mut bucket = Bucket::full(burst, now);
        let result = bucket.take(now, burst, per_second);
        state.buckets.insert(key.clone(), bucket);
        result
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Failed logins per account, with exponential backoff.
#[derive(Debug)]
pub struct LoginBackoff {
    threshold: u32,
    base: Duration,
    max: Duration,
    forget_after: Duration,
    capacity: usize,
    state: Mutex<BackoffState>,
}

#[derive(Debug)]
struct BackoffState {
    accounts: HashMap<String, Attempts>,
    last_sweep: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    /// Attempts not followed by a success.
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

impl LoginBackoff {
    /// Backoff after `threshold` failures, from `base` doubling up to `max`. Failures are
    /// forgotten after an hour without one (or twice `max`, if longer).
    pub fn new(threshold: u32, base: Duration, max: Duration, capacity: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            base,
            max: max.max(base),
            forget_after: (max * 2).max(Duration::from_secs(3600)),
            capacity,
            state: Mutex::new(BackoffState {
                accounts: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Records a login attempt for `account` before the password is checked. Refused (with the
    /// time left) while the account is backing off; the attempt counts as a failure until
    /// [`LoginBackoff::succeeded`] clears it. Returns `Ok(Some(delay))` when this attempt starts
    /// a backoff (for the log).
    pub fn attempt(&self, account: &str) -> Result<Option<Duration>, Duration> {
        self.attempt_at(account, Instant::now())
    }

    fn attempt_at(&self, account: &str, now: Instant) -> Result<Option<Duration>, Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since_sweep = now.saturating_duration_since(state.last_sweep);
        let full = state.accounts.len() >= self.capacity;
        if since_sweep >= SWEEP_INTERVAL || (full && since_sweep >= FULL_SWEEP_INTERVAL) {
            let forget_after = self.forget_after;
            state.accounts.retain(|_, attempts| {
                now.saturating_duration_since(attempts.last) < forget_after
                    || attempts.blocked_until.is_some_and(|until| until > now)
            });
            state.last_sweep = now;
        }
        let key = account_key(account);
        if !state.accounts.contains_key(&key) && state.accounts.len() >= self.capacity {
            // Full of accounts under attack: new names are not tracked (the per-IP limit still
            // applies to them).
            return Ok(None);
        }
        let forget_after = self.forget_after;
        let fresh = Attempts {
            failures: 0,
            blocked_until: None,
            last: now,
        };
        let entry = state.accounts.entry(key).or_insert(fresh);
        if now.saturating_duration_since(entry.last) >= forget_after {
            *entry = fresh;
        }
        if let Some(until) = entry.blocked_until
            && until > now
        {
            return Err(until - now);
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        if entry.failures < self.threshold {
            return Ok(None);
        }
        let doublings = (entry.failures - self.threshold).min(31);
        let delay = self.base.saturating_mul(1 << doublings).min(self.max);
        entry.blocked_until = Some(now + delay);
        Ok(Some(delay))
    }

    /// A successful login for `account`: its failures are forgotten.
    pub fn succeeded(&self, account: &str) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accounts
            .remove(&account_key(account));
    }
}

/// User names as the backoff counts them: trimmed, lower case (so case variants share one
/// counter whatever the account lookup does).
fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

/// The service's rate limits; cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    auth: Option<KeyedBuckets<IpAddr>>,
    negotiate: Option<KeyedBuckets<IpAddr>>,
    login: Option<LoginBackoff>,
    proxies: TrustedProxies,
}

impl RateLimits {
    /// The limits `config` turns on; client addresses through `proxies`.
    pub fn new(config: &RateLimitConfig, proxies: TrustedProxies) -> Self {
        let on = config.enabled;
        Self {
            inner: Arc::new(Inner {
                auth: (on && config.auth_burst > 0).then(|| {
                    KeyedBuckets::new(config.auth_burst, config.auth_per_second, MAX_TRACKED)
                }),
                negotiate: (on && config.negotiate_burst > 0).then(|| {
                    KeyedBuckets::new(
                        config.negotiate_burst,
                        config.negotiate_per_second,
                        MAX_TRACKED,
                    )
                }),
                login: (on && config.login_failures > 0).then(|| {
                    LoginBackoff::new(
                        config.login_failures,
                        config.login_backoff,
                        config.login_backoff_max,
                        MAX_TRACKED,
                    )
                }),
                proxies,
            }),
        }
    }

    /// The client address of a request (see [`crate::client_ip`]); `None` when the server was
    /// not started with connect info (then no per-IP limit applies).
    pub fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let peer = peer_addr(request)?;
        Some(self.inner.proxies.client_ip(peer.ip(), request.headers()))
    }

    /// Counts a login attempt for `account` (see [`LoginBackoff::attempt`]): a 429 while the
    /// account backs off. Names no account can have (see [`validate_name`]) are not tracked.
    pub fn login_attempt(&self, account: &str) -> Result<(), ApiError> {
        let Some(login) = &self.inner.login else {
            return Ok(());
        };
        if validate_name(account).is_err() {
            // No account can have this name (nor is it safe to log or worth memory): the login
            // fails anyway, under the per-IP limit.
            return Ok(());
        }
        match login.attempt(account) {
            Ok(None) => Ok(()),
            Ok(Some(delay)) => {
                tracing::info!(
                    user = %account,
                    backoff_secs = delay.as_secs_f64(),
                    "repeated failed logins: the account backs off"
                );
                Ok(())
            }
            Err(wait) => {
                tracing::debug!(user = %account, "login refused: the account backs off");
                Err(refused(
                    "login_account",
                    wait,
                    "too many failed logins for this account",
                ))
            }
        }
    }

    /// A successful login for `account`: its failures are forgotten.
    pub fn login_succeeded(&self, account: &str) {
        if let Some(login) = &self.inner.login {
            login.succeeded(account);
        }
    }
}

/// Counts and logs a refusal and builds its error.
fn refused(endpoint: &'static str, wait: Duration, what: &str) -> ApiError {
    metrics::counter!(RATE_LIMITED, "endpoint" => endpoint).increment(1);
    let retry_after = retry_after_secs(wait);
    ApiError::TooManyRequests {
        message: format!("{what}; retry in {retry_after} s"),
        retry_after,
    }
}

/// A wait as `Retry-After` seconds: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The `endpoint` label of a sign-in route.
fn auth_endpoint(path: &str) -> &'static str {
    match path {
        "/api/auth/login" => "login",
        "/api/auth/register" => "register",
        "/api/auth/refresh" => "refresh",
        "/api/auth/external" => "external",
        _ => "auth",
    }
}

/// Middleware of the sign-in routes: the per-IP bucket they share.
pub async fn limit_auth(
    State(limits): State<RateLimits>,
    request: Request,
    next: Next,
) -> Response {
    if let (Some(buckets), Some(ip)) = (&limits.inner.auth, limits.client_ip(&request))
        && let Err(wait) = buckets.check(&rate_limit_key(ip))
    {
        let endpoint = auth_endpoint(request.uri().path());
        tracing::debug!(endpoint, client = %ip, "sign-in request refused by the per-IP rate limit");
        return refused(
            endpoint,
            wait,
            "too many sign-in requests from this address",
        )
        .into_response();
    }
    next.run(request).await
}

/// Middleware of the hub routes: the per-IP bucket of `POST …/negotiate` (other hub requests
/// pass untouched).
pub async fn limit_negotiate(
    State(limits): State<RateLimits>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().ends_with("/negotiate")
        && let (Some(buckets), Some(ip)) = (&limits.inner.negotiate, limits.client_ip(&request))
        && let Err(wait) = buckets.check(&rate_limit_key(ip))
    {
        tracing::debug!(client = %ip, "negotiate refused by the per-IP rate limit");
        return refused(
            "negotiate",
            wait,
            "too many negotiate requests from this address",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bucket_burst_then_refill() {
        let buckets = KeyedBuckets::new(3, 2.0, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.check_at(&1, t0).is_ok());
        }
        let wait = buckets.check_at(&1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another key is unaffected.
        assert!(buckets.check_at(&2, t0).is_ok());
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(buckets.check_at(&1, t1).is_ok());
        assert!(buckets.check_at(&1, t1).is_err());
    }

    #[test]
    fn buckets_stay_bounded_and_idle_ones_are_swept() {
        let buckets = KeyedBuckets::new(2, 1.0, 4);
        let t0 = Instant::now();
        for key in 0..4 {
            assert!(buckets.check_at(&key, t0).is_ok());
        }
        assert_eq!(buckets.len(), 4);
        // Full: newcomers share the overflow bucket (burst 2), and the table does not grow.
        assert!(buckets.check_at(&100, t0).is_ok());
        assert!(buckets.check_at(&101, t0).is_ok());
        assert!(buckets.check_at(&102, t0).is_err());
        assert_eq!(buckets.len(), 4);
        // Once the old buckets have refilled they are swept and newcomers get their own.
        let later = t0 + Duration::from_secs(5);
        assert!(buckets.check_at(&103, later).is_ok());
        assert_eq!(buckets.len(), 1);
        // The periodic sweep too.
        let much_later = later + SWEEP_INTERVAL;
        assert!(buckets.check_at(&104, much_later).is_ok());
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn login_backoff_grows_is_bounded_and_resets() {
        let backoff = LoginBackoff::new(3, Duration::from_secs(1), Duration::from_secs(4), 10);
        let t0 = Instant::now();
        assert_eq!(backoff.attempt_at("alice", t0), Ok(None));
        assert_eq!(backoff.attempt_at("alice", t0), Ok(None));
        // The third failure starts the backoff.
        assert_eq!(
            backoff.attempt_at("Alice", t0),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(backoff.attempt_at("alice", t0), Err(Duration::from_secs(1)));
        // Other accounts are unaffected.
        assert_eq!(backoff.attempt_at("bob", t0), Ok(None));
        let mut now = t0;
        for expected in [2, 4, 4, 4] {
            now += Duration::from_secs(60);
            assert_eq!(
                backoff.attempt_at("alice", now),
                Ok(Some(Duration::from_secs(expected)))
            );
        }
        backoff.succeeded("ALICE ");
        now += Duration::from_secs(60);
        assert_eq!(backoff.attempt_at("alice", now), Ok(None));
        // Failures are forgotten after a quiet hour.
        assert_eq!(backoff.attempt_at("alice", now), Ok(None));
        assert!(backoff.attempt_at("alice", now).unwrap().is_some());
        now += Duration::from_secs(3600);
        assert_eq!(backoff.attempt_at("alice", now), Ok(None));
    }

    #[test]
    fn login_backoff_table_is_bounded() {
        let backoff = LoginBackoff::new(1, Duration::from_secs(1), Duration::from_secs(1), 2);
        let t0 = Instant::now();
        assert!(backoff.attempt_at("a", t0).unwrap().is_some());
        assert!(backoff.attempt_at("b", t0).unwrap().is_some());
        // Not tracked, not refused.
        assert_eq!(backoff.attempt_at("c", t0), Ok(None));
        assert_eq!(backoff.attempt_at("c", t0), Ok(None));
        assert_eq!(backoff.state.lock().unwrap().accounts.len(), 2);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
