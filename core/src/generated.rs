//! Values the proxy generates in place of `now()`, `uuid()`, `currentTimestamp()`,
//! `currentDate()` and `currentTime()` (see [`crate::statement::functions`]), so that both
//! clusters store the same value.
//!
//! Time-based UUIDs follow RFC 4122 version 1: 100-nanosecond ticks since 1582-10-15 from the
//! proxy's wall clock, a clock sequence and a 48-bit node id drawn once from the proxy's seeded
//! generator, the node id with its multicast bit set as the RFC asks of ids that are not a
//! network card's address. Ticks strictly increase across the proxy, so its time UUIDs are
//! unique and ordered like the calls. Random UUIDs are version 4 from the seeded generator.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use crate::statement::functions::Function;

/// One generated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    TimeUuid([u8; 16]),
    RandomUuid([u8; 16]),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i64),
    /// Nanoseconds since midnight (UTC).
    Time(i64),
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Generated {
    /// The value of `function` at `wall_micros` (microseconds since the epoch), drawing what
    /// it needs from `uuids` and `random`.
    pub fn of(
        function: Function,
        wall_micros: i64,
        uuids: &TimeUuids,
        random: impl FnMut() -> u64,
    ) -> Self {
        match function {
            Function::TimeUuid => Self::TimeUuid(uuids.next(wall_micros)),
            Function::RandomUuid => Self::RandomUuid(random_uuid(random)),
            Function::Timestamp => Self::Timestamp(wall_micros.div_euclid(1000)),
            Function::Date => Self::Date(wall_micros.div_euclid(MICROS_PER_DAY)),
            Function::Time => Self::Time(wall_micros.rem_euclid(MICROS_PER_DAY) * 1000),
        }
    }

    /// The value as a CQL literal with a type hint, which Cassandra takes wherever a term goes,
    /// including as the argument of an overloaded function (`toTimestamp(...)`).
    pub fn literal(&self) -> String {
        match self {
            Self::TimeUuid(b) => format!("(timeuuid){}", uuid::Uuid::from_bytes(*b).hyphenated()),
            Self::RandomUuid(b) => format!("(uuid){}", uuid::Uuid::from_bytes(*b).hyphenated()),
            Self::Timestamp(ms) => format!("(timestamp){ms}"),
            Self::Date(days) => {
                let (y, m, d) = civil_from_days(*days);
                format!("(date)'{y:04}-{m:02}-{d:02}'")
            }
            Self::Time(nanos) => {
                let secs = nanos / 1_000_000_000;
                format!(
                    "(time)'{:02}:{:02}:{:02}.{:09}'",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60,
                    nanos % 1_000_000_000
                )
            }
        }
    }

    /// The value as bound in an EXECUTE: the type's serialized form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        match self {
            Self::TimeUuid(b) | Self::RandomUuid(b) => out.put_slice(b),
            Self::Timestamp(ms) => out.put_i64(*ms),
            // An unsigned day number with the epoch at 2^31.
            Self::Date(days) => out.put_u32((days + (1i64 << 31)) as u32),
            Self::Time(nanos) => out.put_i64(*nanos),
        }
        out.freeze()
    }
}

/// Offset between the UUID epoch (1582-10-15) and the Unix epoch, in 100 ns ticks.
const UUID_EPOCH_OFFSET: u64 = 0x01b2_1dd2_1381_4000;

/// The proxy's source of time-based UUIDs.
#[derive(Debug)]
pub struct TimeUuids {
    /// Clock sequence (14 bits) and node id (48 bits), as the last 8 bytes of every UUID.
    tail: [u8; 8],
    last_ticks: AtomicU64,
}

impl TimeUuids {
    /// A source with the clock sequence and node id taken from `random`.
    pub fn new(random: u64) -> Self {
        let mut tail = random.to_be_bytes();
        // Variant 10xx in the clock sequence's high byte; multicast bit in the node id.
        tail[0] = (tail[0] & 0x3f) | 0x80;
        tail[2] |= 0x01;
        Self {
            tail,
            last_ticks: AtomicU64::new(0),
        }
    }

    /// The next UUID: at `wall_micros`, or just after the last one if the clock did not move
    /// on (or went back).
    pub fn next(&self, wall_micros: i64) -> [u8; 16] {
        let wall = u64::try_from(wall_micros)
            .unwrap_or(0)
            .saturating_mul(10)
            .saturating_add(UUID_EPOCH_OFFSET);
        let mut last = self.last_ticks.load(Ordering::Relaxed);
        let ticks = loop {
            let next = wall.max(last.saturating_add(1));
            match self.last_ticks.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(actual) => last = actual,
            }
        };
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&((ticks & 0xffff_ffff) as u32).to_be_bytes());
        out[4..6].copy_from_slice(&(((ticks >> 32) & 0xffff) as u16).to_be_bytes());
        out[6..8].copy_from_slice(&((((ticks >> 48) & 0x0fff) as u16) | 0x1000).to_be_bytes());
        out[8..].copy_from_slice(&self.tail);
        out
    }
}

/// A version 4 UUID from 128 random bits.
fn random_uuid(mut random: impl FnMut() -> u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&random().to_be_bytes());
    out[8..].copy_from_slice(&random().to_be_bytes());
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// Year, month, day of a day number since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::{Uuid, Variant, Version};

    /// 2026-12-07T16:10:00.123456Z.
    const WALL: i64 = 1_796_659_800_123_456;

    #[test]
    fn time_uuids_are_version_1_with_a_multicast_node_and_the_wall_clock() {
        let uuids = TimeUuids::new(0x1234_5678_9abc_def0);
        let u = Uuid::from_bytes(uuids.next(WALL));
        assert_eq!(u.get_version(), Some(Version::Mac));
        assert_eq!(u.get_variant(), Variant::RFC4122);
        assert_eq!(
            u.as_bytes()[10] & 0x01,
            0x01,
            "multicast bit of the node id"
        );
        let (seconds, nanos) = u.get_timestamp().unwrap().to_unix();
        assert_eq!(seconds, (WALL / 1_000_000) as u64);
        assert_eq!(nanos, 123_456_000);
    }

    #[test]
    fn time_uuids_strictly_increase_and_never_repeat() {
        let uuids = TimeUuids::new(7);
        let mut last = 0u64;
        let mut seen = std::collections::BTreeSet::new();
        // The same microsecond many times, then a clock going back.
        for wall in (0..50).map(|_| WALL).chain([WALL - 1_000_000, WALL + 1]) {
            let u = Uuid::from_bytes(uuids.next(wall));
            let ticks = u.get_timestamp().unwrap().to_gregorian().0;
            assert!(ticks > last, "{ticks} after {last}");
            last = ticks;
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn random_uuids_are_version_4() {
        let mut n = 0u64;
        let u = Uuid::from_bytes(random_uuid(|| {
            n += 1;
            u64::MAX / n
        }));
        assert_eq!(u.get_version(), Some(Version::Random));
        assert_eq!(u.get_variant(), Variant::RFC4122);
    }

    #[test]
    fn literals_and_bytes() {
        let uuids = TimeUuids::new(1);
        let at = |f| Generated::of(f, WALL, &uuids, || 0);
        assert_eq!(
            at(Function::Timestamp).literal(),
            "(timestamp)1796659800123"
        );
        assert_eq!(at(Function::Date).literal(), "(date)'2026-12-07'");
        assert_eq!(at(Function::Time).literal(), "(time)'16:10:00.123456000'");
        assert_eq!(
            at(Function::RandomUuid).literal(),
            "(uuid)00000000-0000-4000-8000-000000000000"
        );
        assert!(at(Function::TimeUuid).literal().starts_with("(timeuuid)"));
        assert_eq!(
            at(Function::Timestamp).to_bytes().as_ref(),
            1_796_659_800_123i64.to_be_bytes()
        );
        // 2026-12-07 is day 20794 (as a real node reports it).
        assert_eq!(
            at(Function::Date).to_bytes().as_ref(),
            (20_794u32 + (1 << 31)).to_be_bytes()
        );
        assert_eq!(
            at(Function::Time).to_bytes().as_ref(),
            58_200_123_456_000i64.to_be_bytes()
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    proptest! {
        #[test]
        fn every_uuid_is_valid(random in any::<u64>(), wall in 0i64..4_000_000_000_000_000) {
            let t = Uuid::from_bytes(TimeUuids::new(random).next(wall));
            prop_assert_eq!(t.get_version(), Some(Version::Mac));
            prop_assert_eq!(t.get_variant(), Variant::RFC4122);
            let r = Uuid::from_bytes(random_uuid(|| random));
            prop_assert_eq!(r.get_version(), Some(Version::Random));
            prop_assert_eq!(r.get_variant(), Variant::RFC4122);
        }
    }
}
