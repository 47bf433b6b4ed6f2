//! Rate and concurrency limits that protect routers.
//!
//! [`TokenBucket`] is a plain token bucket driven by times passed in (never the system
//! clock), in exact integer arithmetic. [`RateLimiter`] keeps one bucket per router and one
//! per tenant and lets a command through only when both have a token; its async
//! [`RateLimiter::acquire`] sleeps on the injected [`Clock`], so tests move time by hand.
//! [`ConcurrencyLimits`] caps how many commands run against one router at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tikfleet_shared::{RouterId, TenantId, UnixMillis};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::Clock;

/// A rate: `tokens` per `per`, with bursts of up to `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per period (at least 1).
    pub tokens: u32,
    /// The period (at least 1 ms).
    pub per: Duration,
    /// Most tokens the bucket holds (at least 1).
    pub burst: u32,
}

impl Rate {
    /// `tokens` per second with a burst of `burst`.
    #[must_use]
    pub const fn per_second(tokens: u32, burst: u32) -> Self {
        Self {
            tokens,
            per: Duration::from_secs(1),
            burst,
        }
    }
}

/// A token bucket.
///
/// Credit is counted in units of 1/`tokens` of a millisecond-token: each millisecond adds
/// `tokens` units and a token costs `per_ms` units, so no rounding error accumulates.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: u64,
    per_ms: u64,
    cap: u64,
    credit: u64,
    at: UnixMillis,
}

impl TokenBucket {
    /// A full bucket at `now`.
    #[must_use]
    pub fn new(rate: Rate, now: UnixMillis) -> Self {
        let tokens = u64::from(rate.tokens.max(1));
        let per_ms = u64::try_from(rate.per.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let full = u64::from(rate.burst.max(1)).saturating_mul(per_ms);
        // Time is whole milliseconds, so a caller arrives up to 1 ms after a token is due;
        // keeping that sub-millisecond remainder (less than one token) above a full bucket
        // stops the rate drifting when rate does not divide the period.
        let cap = full.saturating_add((tokens - 1).min(per_ms - 1));
        Self {
            tokens,
            per_ms,
            cap,
            credit: full,
            at: now,
        }
    }

    fn refill(&mut self, now: UnixMillis) {
        if now > self.at {
            let elapsed = u64::try_from(now.as_millis() - self.at.as_millis()).unwrap_or(u64::MAX);
            self.credit = self
                .credit
                .saturating_add(elapsed.saturating_mul(self.tokens))
                .min(self.cap);
            self.at = now;
        }
    }

    /// Whether a token is available at `now`, or the moment one will be; takes nothing.
    pub fn check(&mut self, now: UnixMillis) -> Result<(), UnixMillis> {
        self.check_n(1, now)
    }

    /// Whether `n` tokens are available at `now`, or the moment they will be; takes nothing.
    /// `n` is clamped to the burst, so a request never waits forever.
    pub fn check_n(&mut self, n: u32, now: UnixMillis) -> Result<(), UnixMillis> {
        self.refill(now);
        let need = self.cost(n);
        if self.credit >= need {
            Ok(())
        } else {
            let missing = need - self.credit;
            let wait_ms = missing.div_ceil(self.tokens);
            Err(UnixMillis::new(
                self.at
                    .as_millis()
                    .saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX)),
            ))
        }
    }

    /// Takes a token, or says when one will be available.
    pub fn try_acquire(&mut self, now: UnixMillis) -> Result<(), UnixMillis> {
        self.try_acquire_n(1, now)
    }

    /// Takes `n` tokens (clamped to the burst), or says when they will be available.
    pub fn try_acquire_n(&mut self, n: u32, now: UnixMillis) -> Result<(), UnixMillis> {
        self.check_n(n, now)?;
        self.credit -= self.cost(n);
        Ok(())
    }

    /// Credit units of `n` tokens, at most a full bucket.
    fn cost(&self, n: u32) -> u64 {
        let full = self.cap - (self.cap % self.per_ms);
        u64::from(n.max(1)).saturating_mul(self.per_ms).min(full)
    }
}

/// Token buckets per router and per tenant.
#[derive(Debug)]
pub struct RateLimiter {
    router_rate: Rate,
    tenant_rate: Rate,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    routers: HashMap<RouterId, TokenBucket>,
    tenants: HashMap<TenantId, TokenBucket>,
}

impl RateLimiter {
    /// A limiter giving each router `router_rate` and each tenant `tenant_rate`.
    #[must_use]
    pub fn new(router_rate: Rate, tenant_rate: Rate) -> Self {
        Self {
            router_rate,
            tenant_rate,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Takes a token from both the router's and the tenant's bucket, or neither and says
    /// when to try again.
    pub fn try_acquire(
        &self,
        router: RouterId,
        tenant: TenantId,
        now: UnixMillis,
    ) -> Result<(), UnixMillis> {
        self.try_acquire_n(router, tenant, 1, now)
    }

    /// Takes `n` tokens (each bucket clamps `n` to its burst) from both the router's and the
    /// tenant's bucket, or nothing and says when to try again.
    pub fn try_acquire_n(
        &self,
        router: RouterId,
        tenant: TenantId,
        n: u32,
        now: UnixMillis,
    ) -> Result<(), UnixMillis> {
        let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Buckets { routers, tenants } = &mut *b;
        let r = routers
            .entry(router)
            .or_insert_with(|| TokenBucket::new(self.router_rate, now));
        let t = tenants
            .entry(tenant)
            .or_insert_with(|| TokenBucket::new(self.tenant_rate, now));
        match (r.check_n(n, now), t.check_n(n, now)) {
            (Ok(()), Ok(())) => {
                r.try_acquire_n(n, now)?;
                t.try_acquire_n(n, now)
            }
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(a), Ok(())) | (Ok(()), Err(a)) => Err(a),
        }
    }

    /// Waits on `clock` until both buckets have a token, then takes them.
    pub async fn acquire(&self, router: RouterId, tenant: TenantId, clock: &dyn Clock) {
        self.acquire_n(router, tenant, 1, clock).await;
    }

    /// Waits on `clock` until both buckets have `n` tokens (clamped to each burst), then
    /// takes them.
    pub async fn acquire_n(&self, router: RouterId, tenant: TenantId, n: u32, clock: &dyn Clock) {
        loop {
            match self.try_acquire_n(router, tenant, n, clock.now()) {
                Ok(()) => return,
                Err(at) => clock.sleep_until(at).await,
            }
        }
    }
}

/// At most `per_router` commands at once against one router.
#[derive(Debug)]
pub struct ConcurrencyLimits {
    per_router: usize,
    routers: Mutex<HashMap<RouterId, Arc<Semaphore>>>,
}

impl ConcurrencyLimits {
    /// Limits of `per_router` (at least 1) concurrent commands per router.
    #[must_use]
    pub fn new(per_router: usize) -> Self {
        Self {
            per_router: per_router.max(1),
            routers: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, router: RouterId) -> Arc<Semaphore> {
        let mut map = self.routers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(router)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_router))),
        )
    }

    /// Waits for a slot on `router`; the slot is freed when the permit is dropped.
    pub async fn acquire(&self, router: RouterId) -> OwnedSemaphorePermit {
        match self.semaphore(router).acquire_owned().await {
            Ok(permit) => permit,
            // The semaphores are never closed.
            Err(_) => unreachable!("router semaphores are never closed"),
        }
    }

    /// Slots free on `router` now.
    #[must_use]
    pub fn available(&self, router: RouterId) -> usize {
        self.semaphore(router).available_permits()
    }

    /// A slot on `router` if one is free now.
    #[must_use]
    pub fn try_acquire(&self, router: RouterId) -> Option<OwnedSemaphorePermit> {
        self.semaphore(router).try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const T0: UnixMillis = UnixMillis::new(1_000_000);

    fn ms(n: i64) -> UnixMillis {
        UnixMillis::new(T0.as_millis() + n)
    }

    #[test]
    fn burst_at_once_then_one_per_interval() {
        // 10 per second, burst 4: four at once, then one every 100 ms.
        let mut bucket = TokenBucket::new(Rate::per_second(10, 4), T0);
        for _ in 0..4 {
            assert_eq!(bucket.try_acquire(T0), Ok(()));
        }
        assert_eq!(bucket.try_acquire(T0), Err(ms(100)));
        assert_eq!(bucket.try_acquire(ms(99)), Err(ms(100)));
        for k in 1..=5 {
            assert_eq!(bucket.try_acquire(ms(100 * k)), Ok(()), "token {k}");
            assert_eq!(bucket.try_acquire(ms(100 * k)), Err(ms(100 * (k + 1))));
        }
        // A long pause refills only up to the burst.
        let later = ms(60_000);
        for _ in 0..4 {
            assert_eq!(bucket.try_acquire(later), Ok(()));
        }
        assert!(bucket.try_acquire(later).is_err());
    }

    #[test]
    fn rates_that_do_not_divide_a_second_stay_exact() {
        // 3 per second: a token every 333⅓ ms; after the first, nine more come within
        // exactly three seconds, with no drift from rounding to whole milliseconds.
        let mut bucket = TokenBucket::new(Rate::per_second(3, 1), T0);
        assert_eq!(bucket.try_acquire(T0), Ok(()));
        let mut got = 0;
        let mut now = T0;
        while now < ms(3_000) {
            now = match bucket.try_acquire(now) {
                Ok(()) => {
                    got += 1;
                    now
                }
                Err(at) => at,
            };
        }
        assert_eq!(bucket.try_acquire(ms(3_000)), Ok(()));
        assert_eq!(got, 8);
    }

    #[test]
    fn router_and_tenant_buckets_both_apply() {
        let limiter = RateLimiter::new(Rate::per_second(10, 2), Rate::per_second(1, 3));
        let tenant = TenantId::new();
        let (a, b) = (RouterId::new(), RouterId::new());
        assert_eq!(limiter.try_acquire(a, tenant, T0), Ok(()));
        assert_eq!(limiter.try_acquire(a, tenant, T0), Ok(()));
        // Router a is empty; the tenant still has one token, taken by router b.
        assert_eq!(limiter.try_acquire(a, tenant, T0), Err(ms(100)));
        assert_eq!(limiter.try_acquire(b, tenant, T0), Ok(()));
        // Now the tenant is empty too: router b waits for the tenant's next token.
        assert_eq!(limiter.try_acquire(b, tenant, T0), Err(ms(1_000)));
        // A refused attempt took nothing from router b's bucket.
        assert_eq!(limiter.try_acquire(b, tenant, ms(1_000)), Ok(()));
    }

    #[tokio::test]
    async fn acquire_sleeps_on_the_clock() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let clock = ManualClock::new(T0);
            let limiter = Arc::new(RateLimiter::new(
                Rate::per_second(5, 1),
                Rate::per_second(100, 100),
            ));
            let (router, tenant) = (RouterId::new(), TenantId::new());
            limiter.acquire(router, tenant, &clock).await;
            let waiter = {
                let (limiter, clock) = (Arc::clone(&limiter), clock.clone());
                tokio::spawn(async move { limiter.acquire(router, tenant, &clock).await })
            };
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            clock.advance(Duration::from_millis(200));
            waiter.await.unwrap();
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn concurrency_limit_per_router() {
        let limits = ConcurrencyLimits::new(2);
        let (a, b) = (RouterId::new(), RouterId::new());
        let p1 = limits.acquire(a).await;
        let _p2 = limits.acquire(a).await;
        assert!(limits.try_acquire(a).is_none());
        assert!(limits.try_acquire(b).is_some());
        assert_eq!(limits.available(a), 0);
        assert_eq!(limits.available(b), 2);
        drop(p1);
        assert_eq!(limits.available(a), 1);
        assert!(limits.try_acquire(a).is_some());
    }

    #[test]
    fn several_tokens_at_once_clamped_to_the_burst() {
        // 10 per second, burst 4.
        let mut bucket = TokenBucket::new(Rate::per_second(10, 4), T0);
        assert_eq!(bucket.try_acquire_n(3, T0), Ok(()));
        assert_eq!(bucket.try_acquire_n(3, T0), Err(ms(200)));
        assert_eq!(bucket.try_acquire_n(3, ms(200)), Ok(()));
        // More than the burst costs a full bucket, never more.
        assert_eq!(bucket.try_acquire_n(9, ms(200)), Err(ms(600)));
        assert_eq!(bucket.try_acquire_n(9, ms(600)), Ok(()));
        assert_eq!(bucket.try_acquire(ms(600)), Err(ms(700)));
    }
}
