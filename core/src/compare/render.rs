//! Values as text for divergence samples.
//!
//! A human reading a report wants `42` and `'alice'`, not `0x0000002a`; but a sample must
//! never cost more than its cap, and bytes that do not fit their type (or a type the renderer
//! does not spell out: collections, UDTs, tuples, blobs, durations, custom types) are shown
//! as hex rather than guessed at. Rendering first decides what the bytes are (without
//! allocating), then writes at most `max_len` characters, so a megabyte blob costs a few
//! dozen bytes of hex.

use std::fmt::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::message::ColumnType;

/// The ellipsis that ends a cut value.
const ELLIPSIS: char = '…';

/// `value` rendered as `column_type` (hex when the type is unknown or the bytes do not fit
/// it), at most `max_len` characters.
pub(super) fn render(column_type: Option<&ColumnType<'_>>, value: &[u8], max_len: usize) -> String {
    bounded(max_len, |out| {
        write!(out, "{}", Value::read(column_type, value))
    })
}

/// `text` cut to at most `max_len` characters.
pub(super) fn truncate(text: &str, max_len: usize) -> String {
    bounded(max_len, |out| out.write_str(text))
}

/// Runs `write` into a writer that keeps `max_len` characters and marks a cut with an
/// ellipsis (in place of the last kept character, so the result never exceeds `max_len`).
fn bounded(max_len: usize, write: impl FnOnce(&mut Bounded) -> fmt::Result) -> String {
    let mut out = Bounded {
        out: String::new(),
        left: max_len,
        cut: false,
    };
    // An error only means the cap was reached: what was written so far is the answer.
    let _ = write(&mut out);
    if out.cut && max_len > 0 {
        out.out.pop();
        out.out.push(ELLIPSIS);
    }
    out.out
}

/// A `fmt::Write` that stops (with an error, which ends the formatting early) after a number
/// of characters.
struct Bounded {
    out: String,
    left: usize,
    cut: bool,
}

impl Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.left == 0 {
                self.cut = true;
                return Err(fmt::Error);
            }
            self.out.push(c);
            self.left -= 1;
        }
        Ok(())
    }
}

/// What a value's bytes are, decided without allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'v> {
    Text(&'v str),
    Integer(i128),
    Boolean(bool),
    Float(f32),
    Double(f64),
    Uuid(&'v [u8; 16]),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i64),
    /// Nanoseconds since midnight.
    Time(i64),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// `unscaled × 10^-scale`, with a scale small enough to write out.
    Decimal {
        unscaled: i128,
        scale: i32,
    },
    Hex(&'v [u8]),
}

/// The largest scale (either sign) a decimal is written out with; beyond, it is hex.
const MAX_DECIMAL_SCALE: i32 = 64;

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

impl<'v> Value<'v> {
    fn read(column_type: Option<&ColumnType<'_>>, v: &'v [u8]) -> Self {
        let Some(column_type) = column_type else {
            return Self::Hex(v);
        };
        let typed = match column_type {
            ColumnType::Ascii | ColumnType::Varchar => std::str::from_utf8(v).ok().map(Self::Text),
            ColumnType::Int => fixed::<4>(v).map(|b| Self::Integer(i32::from_be_bytes(b).into())),
            ColumnType::Bigint | ColumnType::Counter => {
                fixed::<8>(v).map(|b| Self::Integer(i64::from_be_bytes(b).into()))
            }
            ColumnType::Smallint => {
                fixed::<2>(v).map(|b| Self::Integer(i16::from_be_bytes(b).into()))
            }
            ColumnType::Tinyint => {
                fixed::<1>(v).map(|b| Self::Integer(i8::from_be_bytes(b).into()))
            }
            ColumnType::Varint => varint(v).map(Self::Integer),
            ColumnType::Boolean => fixed::<1>(v).map(|[b]| Self::Boolean(b != 0)),
            ColumnType::Float => fixed::<4>(v).map(|b| Self::Float(f32::from_be_bytes(b))),
            ColumnType::Double => fixed::<8>(v).map(|b| Self::Double(f64::from_be_bytes(b))),
            ColumnType::Uuid | ColumnType::Timeuuid => {
                <&[u8; 16]>::try_from(v).ok().map(Self::Uuid)
            }
            ColumnType::Timestamp => fixed::<8>(v).map(|b| Self::Timestamp(i64::from_be_bytes(b))),
            // Days with the epoch at 2^31, so that the unsigned order is the time order.
            ColumnType::Date => {
                fixed::<4>(v).map(|b| Self::Date(i64::from(u32::from_be_bytes(b)) - (1 << 31)))
            }
            ColumnType::Time => fixed::<8>(v)
                .map(i64::from_be_bytes)
                .filter(|ns| (0..NANOS_PER_DAY).contains(ns))
                .map(Self::Time),
            ColumnType::Inet => match v.len() {
                4 => fixed::<4>(v).map(|b| Self::Ipv4(Ipv4Addr::from(b))),
                16 => fixed::<16>(v).map(|b| Self::Ipv6(Ipv6Addr::from(b))),
                _ => None,
            },
            ColumnType::Decimal => decimal(v),
            _ => None,
        };
        typed.unwrap_or(Self::Hex(v))
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    <[u8; N]>::try_from(v).ok()
}

/// A two's-complement big-endian integer of 1 to 16 bytes.
fn varint(v: &[u8]) -> Option<i128> {
    let first = *v.first()?;
    if v.len() > 16 {
        return None;
    }
    let init: i128 = if first & 0x80 != 0 { -1 } else { 0 };
    Some(v.iter().fold(init, |acc, b| (acc << 8) | i128::from(*b)))
}

/// `<scale int><unscaled varint>`.
fn decimal(v: &[u8]) -> Option<Value<'_>> {
    let scale = i32::from_be_bytes(fixed::<4>(v.get(..4)?)?);
    if !(-MAX_DECIMAL_SCALE..=MAX_DECIMAL_SCALE).contains(&scale) {
        return None;
    }
    Some(Value::Decimal {
        unscaled: varint(v.get(4..)?)?,
        scale,
    })
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(n) => write!(f, "{n}"),
            Self::Boolean(b) => write!(f, "{b}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Double(x) => write!(f, "{x}"),
            Self::Uuid(u) => write_uuid(f, u),
            Self::Timestamp(ms) => write_timestamp(f, ms),
            Self::Date(days) => match civil_date(days) {
                Some((y, m, d)) => write!(f, "{y:04}-{m:02}-{d:02}"),
                None => write!(f, "{days}"),
            },
            Self::Time(ns) => write!(
                f,
                "{:02}:{:02}:{:02}.{:09}",
                ns / 3_600_000_000_000,
                ns / 60_000_000_000 % 60,
                ns / 1_000_000_000 % 60,
                ns % 1_000_000_000
            ),
            Self::Ipv4(a) => write!(f, "{a}"),
            Self::Ipv6(a) => write!(f, "{a}"),
            Self::Decimal { unscaled, scale } => write_decimal(f, unscaled, scale),
            Self::Hex(bytes) => {
                f.write_str("0x")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// `8-4-4-4-12` lower-case hex.
fn write_uuid(f: &mut fmt::Formatter<'_>, u: &[u8; 16]) -> fmt::Result {
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// ISO 8601 in UTC with milliseconds for years 1 to 9999; the raw milliseconds otherwise.
fn write_timestamp(f: &mut fmt::Formatter<'_>, ms: i64) -> fmt::Result {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    match civil_date(days) {
        Some((y, m, d)) => write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day / 1000 % 60,
            in_day % 1000
        ),
        None => write!(f, "{ms}"),
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01, for years 1 to 9999 only (what ISO
/// dates can spell without a sign or a fifth digit).
fn civil_date(days: i64) -> Option<(i64, i64, i64)> {
    // Bounds well outside years 1..=9999, so that the arithmetic below cannot overflow.
    if !(-800_000..=3_000_000).contains(&days) {
        return None;
    }
    // Count from 0000-03-01 so that leap days fall at the end of each year, in 400-year eras
    // of 146097 days.
    let from_march_0000 = days + 719_468;
    let era = from_march_0000.div_euclid(146_097);
    let day_of_era = from_march_0000.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 153 days per five months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (1..=9999).contains(&year).then_some((year, month, day))
}

/// `unscaled × 10^-scale` written out in plain decimal notation.
fn write_decimal(f: &mut fmt::Formatter<'_>, unscaled: i128, scale: i32) -> fmt::Result {
    if unscaled < 0 {
        f.write_str("-")?;
    }
    // 39 digits hold any u128.
    let mut buf = [0u8; 39];
    let mut at = buf.len();
    let mut n = unscaled.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?;
    if scale <= 0 {
        f.write_str(digits)?;
        return (0..scale.unsigned_abs()).try_for_each(|_| f.write_str("0"));
    }
    let scale = scale.unsigned_abs() as usize;
    match digits.len().checked_sub(scale) {
        Some(0) | None => {
            f.write_str("0.")?;
            (digits.len()..scale).try_for_each(|_| f.write_str("0"))?;
            f.write_str(digits)
        }
        Some(whole) => {
            let (int, frac) = digits.split_at(whole);
            write!(f, "{int}.{frac}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: ColumnType<'_>, v: &[u8]) -> String {
        render(Some(&t), v, 100)
    }

    #[test]
    fn renders_by_type() {
        assert_eq!(r(ColumnType::Varchar, b"alice"), "alice");
        assert_eq!(r(ColumnType::Ascii, b"bob"), "bob");
        assert_eq!(r(ColumnType::Int, &(-42i32).to_be_bytes()), "-42");
        assert_eq!(r(ColumnType::Bigint, &7i64.to_be_bytes()), "7");
        assert_eq!(r(ColumnType::Counter, &9i64.to_be_bytes()), "9");
        assert_eq!(r(ColumnType::Smallint, &300i16.to_be_bytes()), "300");
        assert_eq!(r(ColumnType::Tinyint, &[0xff]), "-1");
        assert_eq!(r(ColumnType::Varint, &[0x01, 0x00]), "256");
        assert_eq!(r(ColumnType::Varint, &[0xff, 0x00]), "-256");
        assert_eq!(r(ColumnType::Boolean, &[1]), "true");
        assert_eq!(r(ColumnType::Boolean, &[0]), "false");
        assert_eq!(r(ColumnType::Float, &1.5f32.to_be_bytes()), "1.5");
        assert_eq!(r(ColumnType::Double, &(-0.25f64).to_be_bytes()), "-0.25");
        let uuid = [
            0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44,
            0x00, 0x00,
        ];
        assert_eq!(
            r(ColumnType::Uuid, &uuid),
            "550e8400-e29b-41d4-a716-446655440000"
        );
        assert_eq!(
            r(ColumnType::Timestamp, &1_700_000_000_000i64.to_be_bytes()),
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(
            r(ColumnType::Timestamp, &(-1i64).to_be_bytes()),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            r(ColumnType::Timestamp, &i64::MAX.to_be_bytes()),
            i64::MAX.to_string()
        );
        assert_eq!(
            r(ColumnType::Date, &(1u32 << 31).to_be_bytes()),
            "1970-01-01"
        );
        assert_eq!(
            r(ColumnType::Date, &((1u32 << 31) + 19_782).to_be_bytes()),
            "2024-02-29"
        );
        assert_eq!(r(ColumnType::Date, &[0, 0, 0, 0]), "-2147483648");
        assert_eq!(
            r(ColumnType::Time, &3_723_000_000_005i64.to_be_bytes()),
            "01:02:03.000000005"
        );
        assert_eq!(r(ColumnType::Inet, &[10, 0, 0, 1]), "10.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(r(ColumnType::Inet, &v6), "::1");
        let decimal = |scale: i32, unscaled: &[u8]| {
            let mut v = scale.to_be_bytes().to_vec();
            v.extend_from_slice(unscaled);
            r(ColumnType::Decimal, &v)
        };
        assert_eq!(decimal(2, &[0x04, 0xd2]), "12.34");
        assert_eq!(decimal(5, &[0x04, 0xd2]), "0.01234");
        assert_eq!(decimal(4, &[0x04, 0xd2]), "0.1234");
        assert_eq!(decimal(-2, &[0xfb, 0x2e]), "-123400");
        assert_eq!(decimal(0, &[0]), "0");
        assert_eq!(r(ColumnType::Blob, &[0xca, 0xfe]), "0xcafe");
        assert_eq!(
            r(ColumnType::List(Box::new(ColumnType::Int)), &[0, 0]),
            "0x0000"
        );
        assert_eq!(render(None, &[1, 2], 10), "0x0102");
    }

    #[test]
    fn bytes_that_do_not_fit_the_type_are_hex() {
        assert_eq!(r(ColumnType::Int, &[1, 2, 3]), "0x010203");
        assert_eq!(r(ColumnType::Int, &[]), "0x");
        assert_eq!(r(ColumnType::Varchar, &[0xff, 0xfe]), "0xfffe");
        assert_eq!(
            r(ColumnType::Uuid, &[1; 15]),
            format!("0x{}", "01".repeat(15))
        );
        assert_eq!(r(ColumnType::Inet, &[1, 2, 3]), "0x010203");
        assert_eq!(
            r(ColumnType::Varint, &[1; 17]),
            format!("0x{}", "01".repeat(17))
        );
        assert_eq!(
            r(ColumnType::Time, &(-1i64).to_be_bytes()),
            "0xffffffffffffffff"
        );
        assert_eq!(r(ColumnType::Decimal, &[0, 0, 0, 1]), "0x00000001");
        assert_eq!(r(ColumnType::Decimal, &[0x7f, 0, 0, 0, 1]), "0x7f00000001");
    }

    #[test]
    fn values_are_cut_to_the_cap() {
        let long = "é".repeat(50);
        let cut = render(Some(&ColumnType::Varchar), long.as_bytes(), 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
        assert_eq!(
            render(Some(&ColumnType::Varchar), b"exactly10!", 10),
            "exactly10!"
        );
        assert_eq!(
            render(Some(&ColumnType::Blob), &[0xab; 1 << 20], 8),
            "0xababa…"
        );
        assert_eq!(render(Some(&ColumnType::Varchar), b"abc", 0), "");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
