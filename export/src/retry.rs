//! Which export failures are retried, and after how long.
//!
//! Classification follows the OTLP specification ("Failures" in the OTLP protocol spec):
//! retrying a request the server will never accept only delays the batches behind it, and not
//! retrying a transient one loses spans. Waits grow exponentially with jitter (so many agents
//! that lost the same collector do not come back in step), and a server's own throttling
//! delay (gRPC `RetryInfo`, HTTP `Retry-After`) replaces the computed one.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime},
};

use crate::config::RetryConfig;

/// What a failed attempt allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Try again: after `throttle` if the server said so, else after a backoff.
    Retryable { throttle: Option<Duration> },
    /// The same request will fail again: drop it.
    Permanent,
}

/// gRPC status codes (per the OTLP spec): UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED,
/// OUT_OF_RANGE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED only when the server sent
/// `RetryInfo` (it is throttling, rather than refusing a request that is too large); all
/// others are permanent.
pub fn classify_grpc(code: tonic::Code, retry_info: Option<Duration>) -> Class {
    use tonic::Code::*;
    match code {
        Unavailable | Cancelled | DeadlineExceeded | Aborted | OutOfRange | DataLoss => {
            Class::Retryable {
                throttle: retry_info,
            }
        }
        ResourceExhausted if retry_info.is_some() => Class::Retryable {
            throttle: retry_info,
        },
        _ => Class::Permanent,
    }
}

/// HTTP status codes (per the OTLP spec): 429, 502, 503 and 504 are retryable (honouring
/// `Retry-After`); every other non-2xx status is permanent.
pub fn classify_http(status: u16, retry_after: Option<Duration>) -> Class {
    match status {
        429 | 502 | 503 | 504 => Class::Retryable {
            throttle: retry_after,
        },
        _ => Class::Permanent,
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (relative to `now`; a past date is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The un-jittered delay before retry number `retry` (0 = the first retry):
/// `initial * 2^retry`, capped at `max`.
pub fn base_delay(retry: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// `base` scaled into `[base/2, base]` by `unit` in `[0, 1]` ("equal jitter").
pub fn jittered(base: Duration, unit: f64) -> Duration {
    base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// Exponential backoff with jitter for one batch.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    retry: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(config: &RetryConfig) -> Self {
        // A random seed without a dependency: std's per-process random hasher keys.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            initial: config.initial_backoff,
            max: config.max_backoff,
            retry: 0,
            rng: seed,
        }
    }

    /// How long to wait after a failed attempt of this class.
    pub fn next_delay(&mut self, class: Class) -> Duration {
        let computed = jittered(base_delay(self.retry, self.initial, self.max), self.unit());
        self.retry = self.retry.saturating_add(1);
        match class {
            // The server's delay is a minimum it asked for: no jitter below it.
            Class::Retryable {
                throttle: Some(throttle),
            } => throttle,
            _ => computed,
        }
    }

    /// splitmix64, mapped to `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn grpc_classification_matches_the_spec_table() {
        let retryable = [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ];
        let permanent = [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
        ];
        for code in retryable {
            assert_eq!(
                classify_grpc(code, None),
                Class::Retryable { throttle: None },
                "{code:?}"
            );
        }
        for code in permanent {
            assert_eq!(classify_grpc(code, None), Class::Permanent, "{code:?}");
        }
        assert_eq!(
            classify_grpc(Code::ResourceExhausted, None),
            Class::Permanent
        );
        let d = Some(Duration::from_millis(1500));
        assert_eq!(
            classify_grpc(Code::ResourceExhausted, d),
            Class::Retryable { throttle: d }
        );
        assert_eq!(
            classify_grpc(Code::Unavailable, d),
            Class::Retryable { throttle: d }
        );
    }

    #[test]
    fn http_classification_matches_the_spec_table() {
        for s in [429, 502, 503, 504] {
            assert_eq!(
                classify_http(s, None),
                Class::Retryable { throttle: None },
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 405, 413, 415, 500, 501, 505] {
            assert_eq!(classify_http(s, None), Class::Permanent, "{s}");
        }
        let d = Some(Duration::from_secs(2));
        assert_eq!(classify_http(503, d), Class::Retryable { throttle: d });
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn base_delay_doubles_and_caps() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        let got: Vec<u128> = (0..6).map(|r| base_delay(r, i, m).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(base_delay(40, i, m), m, "no overflow on many retries");
        assert_eq!(base_delay(u32::MAX, i, m), m);
    }

    #[test]
    fn jittered_delays_stay_within_half_to_full_base() {
        let config = RetryConfig {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1600),
        };
        let mut b = Backoff::new(&config);
        let mut distinct = std::collections::HashSet::new();
        for retry in 0..200u32 {
            let base = base_delay(retry, config.initial_backoff, config.max_backoff);
            let d = b.next_delay(Class::Retryable { throttle: None });
            assert!(
                d >= base / 2 && d <= base,
                "retry {retry}: {d:?} not in [{:?}, {base:?}]",
                base / 2
            );
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 100,
            "jitter varies: {} distinct delays",
            distinct.len()
        );
        assert_eq!(
            jittered(Duration::from_secs(2), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            jittered(Duration::from_secs(2), 1.0),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn server_throttle_replaces_the_backoff_exactly() {
        let mut b = Backoff::new(&RetryConfig::default());
        let t = Duration::from_millis(1234);
        assert_eq!(b.next_delay(Class::Retryable { throttle: Some(t) }), t);
        assert_eq!(
            b.next_delay(Class::Retryable {
                throttle: Some(Duration::ZERO)
            }),
            Duration::ZERO
        );
    }
}
