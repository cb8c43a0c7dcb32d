//! The values the functional tests send and receive: `ComplexObject` and `CustomObject`
//! (`ComplexObject.cs` and `TestHub.cs` of the official app; spec §10.3).
//!
//! The .NET serialisers pick a different wire form per protocol, so the field types here do too,
//! keyed on serde's `is_human_readable()` (`serde_json`: true, `rmp_serde`: false):
//!
//! | .NET type  | JSON (System.Text.Json)          | MessagePack (MessagePack-CSharp)  |
//! |------------|----------------------------------|-----------------------------------|
//! | `byte[]`   | base64 string (`"AQID"`)          | `bin`                             |
//! | `DateTime` | ISO 8601 (`2000-01-01T00:00:00Z`) | timestamp extension (type -1)     |
//! | `Guid`     | `"00010203-0405-0607-0706-…"`     | the same string                   |

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// The argument of `SendCustomObject`: `{ "Name": string, "Value": int }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CustomObject {
    /// `Name`.
    #[serde(alias = "name")]
    pub(crate) name: Option<String>,
    /// `Value`.
    #[serde(alias = "value")]
    pub(crate) value: i32,
}

/// `ComplexObject`: exactly the keys `String`, `IntArray`, `ByteArray`, `Guid`, `DateTime`, in the
/// order .NET writes them. Missing keys take the .NET defaults (null, `Guid.Empty`,
/// `DateTime.MinValue`); camelCase keys are accepted too (the JSON protocol matches property names
/// case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct ComplexObject {
    /// `String`.
    #[serde(alias = "string")]
    pub(crate) string: Option<String>,
    /// `IntArray`.
    #[serde(alias = "intArray")]
    pub(crate) int_array: Option<Vec<i32>>,
    /// `ByteArray`.
    #[serde(alias = "byteArray")]
    pub(crate) byte_array: Option<ByteArray>,
    /// `Guid`.
    #[serde(alias = "guid")]
    pub(crate) guid: Guid,
    /// `DateTime`.
    #[serde(alias = "dateTime")]
    pub(crate) date_time: DateTime,
}

impl ComplexObject {
    /// What `SendComplexObject` returns.
    pub(crate) fn sample() -> Self {
        Self {
            string: Some("hello world".to_owned()),
            int_array: Some(vec![1, 2, 3]),
            byte_array: Some(ByteArray(vec![1, 2, 3])),
            guid: Guid(0x0001_0203_0405_0607_0706_0504_0302_0100),
            date_time: DateTime::utc(946_684_800, 0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// byte[]
// ---------------------------------------------------------------------------------------------

/// A .NET `byte[]`: base64 text in JSON, `bin` in MessagePack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ByteArray(pub(crate) Vec<u8>);

impl Serialize for ByteArray {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&BASE64.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            BASE64
                .decode(text.as_bytes())
                .map(ByteArray)
                .map_err(|_| de::Error::custom("ByteArray is not valid base64"))
        } else {
            deserializer
                .deserialize_byte_buf(BytesVisitor)
                .map(ByteArray)
        }
    }
}

/// Accepts `bin` (and, leniently, an array of small integers).
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("binary data")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Guid
// ---------------------------------------------------------------------------------------------

/// A .NET `Guid`, written in the "D" format (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase) in
/// both protocols. Parsing accepts the D, N, B and P formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Guid(pub(crate) u128);

impl Guid {
    fn parse(text: &str) -> Option<Self> {
        let inner = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .or_else(|| text.strip_prefix('(').and_then(|t| t.strip_suffix(')')))
            .unwrap_or(text);
        let hex: String = match inner.len() {
            32 => inner.to_owned(),
            36 => {
                let b = inner.as_bytes();
                if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                    return None;
                }
                inner.chars().filter(|&c| c != '-').collect()
            }
            _ => return None,
        };
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(Guid)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Guid::parse(&text).ok_or_else(|| de::Error::custom("Guid is not in a recognised format"))
    }
}

// ---------------------------------------------------------------------------------------------
// DateTime
// ---------------------------------------------------------------------------------------------

/// MessagePack's timestamp extension type.
const TIMESTAMP_EXT: i8 = -1;
/// The newtype-struct name through which `rmp_serde` reads and writes extension types.
const MSGPACK_EXT_STRUCT: &str = "_ExtStruct";
/// Seconds from 0001-01-01 to 1970-01-01 (`DateTime.MinValue` relative to the Unix epoch).
const MIN_VALUE_SECS: i64 = -62_135_596_800;
/// Seconds from 1970-01-01 to 10000-01-01 (one past `DateTime.MaxValue`).
const END_SECS: i64 = 253_402_300_800;

/// A .NET `DateTime` with 100 ns resolution, as seconds and nanoseconds since the Unix epoch.
///
/// `utc` is its `Kind`: UTC values are written with a `Z` suffix in JSON; values parsed without
/// a zone ("Unspecified") are written back without one, as .NET does. Values with an offset are
/// converted to UTC. MessagePack timestamps are always UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    secs: i64,
    nanos: u32,
    utc: bool,
}

impl Default for DateTime {
    /// `DateTime.MinValue` (`0001-01-01T00:00:00`, kind Unspecified).
    fn default() -> Self {
        Self {
            secs: MIN_VALUE_SECS,
            nanos: 0,
            utc: false,
        }
    }
}

impl DateTime {
    /// A UTC instant; `nanos` is truncated to 100 ns ticks.
    pub(crate) fn utc(secs: i64, nanos: u32) -> Self {
        Self {
            secs,
            nanos: nanos - nanos % 100,
            utc: true,
        }
    }

    fn in_range(&self) -> bool {
        (MIN_VALUE_SECS..END_SECS).contains(&self.secs) && self.nanos < 1_000_000_000
    }

    /// Parses the ISO 8601 forms System.Text.Json reads: `YYYY-MM-DD`, optionally followed by
    /// `THH:MM[:SS[.fraction]]` and `Z` or `±HH:MM`.
    fn parse_iso(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(range)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0u32);
        let mut rest = &text[10..];
        if let Some(time) = rest.strip_prefix('T') {
            let t = time.as_bytes();
            if t.len() < 5 || t[2] != b':' {
                return None;
            }
            let tn = |r: std::ops::Range<usize>| num(r.start + 11..r.end + 11);
            hour = tn(0..2)?;
            minute = tn(3..5)?;
            let mut used = 5;
            if t.get(5) == Some(&b':') {
                second = tn(6..8)?;
                used = 8;
                if t.get(8) == Some(&b'.') {
                    let digits = t[9..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if digits == 0 {
                        return None;
                    }
                    // Keep 100 ns ticks (7 digits), as .NET does.
                    let kept = &time[9..9 + digits.min(7)];
                    let ticks: u32 = kept.parse().ok()?;
                    nanos = ticks * 10u32.pow(7 - kept.len() as u32) * 100;
                    used = 9 + digits;
                }
            }
            if hour > 23 || minute > 59 || second > 59 {
                return None;
            }
            rest = &time[used..];
        }
        let local =
            days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
        let (secs, utc) = match rest {
            "" => (local, false),
            "Z" => (local, true),
            offset => {
                let o = offset.as_bytes();
                if o.len() != 6 || o[3] != b':' || !(o[0] == b'+' || o[0] == b'-') {
                    return None;
                }
                let digits = |r: std::ops::Range<usize>| -> Option<i64> {
                    let part = &o[r];
                    if !part.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    std::str::from_utf8(part).ok()?.parse().ok()
                };
                let minutes = digits(1..3)? * 60 + digits(4..6)?;
                let sign = if o[0] == b'+' { 1 } else { -1 };
                (local - sign * minutes * 60, true)
            }
        };
        let parsed = Self { secs, nanos, utc };
        parsed.in_range().then_some(parsed)
    }

    /// The MessagePack timestamp body: 4, 8 or 12 bytes, the smallest that fits (as both
    /// MessagePack-CSharp and `@msgpack/msgpack` choose).
    fn timestamp_bytes(&self) -> Vec<u8> {
        if self.secs >> 34 == 0 {
            if self.nanos == 0 && self.secs <= i64::from(u32::MAX) {
                (self.secs as u32).to_be_bytes().to_vec()
            } else {
                ((u64::from(self.nanos) << 34) | self.secs as u64)
                    .to_be_bytes()
                    .to_vec()
            }
        } else {
            let mut out = self.nanos.to_be_bytes().to_vec();
            out.extend_from_slice(&self.secs.to_be_bytes());
            out
        }
    }

    fn from_timestamp_bytes(data: &[u8]) -> Option<Self> {
        let (secs, nanos) = match data.len() {
            4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
            8 => {
                let v = u64::from_be_bytes(data.try_into().ok()?);
                ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
            }
            12 => (
                i64::from_be_bytes(data[4..].try_into().ok()?),
                u32::from_be_bytes(data[..4].try_into().ok()?),
            ),
            _ => return None,
        };
        let parsed = Self::utc(secs, nanos);
        (nanos < 1_000_000_000 && parsed.in_range()).then_some(parsed)
    }
}

impl fmt::Display for DateTime {
    /// The round-trip ISO form System.Text.Json writes: fraction only when non-zero, trailing
    /// zeros trimmed, `Z` for UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3_600,
            rem % 3_600 / 60,
            rem % 60
        )?;
        if self.nanos != 0 {
            let ticks = format!("{:07}", self.nanos / 100);
            write!(f, ".{}", ticks.trim_end_matches('0'))?;
        }
        if self.utc {
            f.write_str("Z")?;
        }
        Ok(())
    }
}

/// An extension value as `rmp_serde` expects it inside `_ExtStruct`: a (tag, bytes) tuple.
struct Ext<'a>(i8, &'a [u8]);

impl Serialize for Ext<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.0)?;
        tuple.serialize_element(&Bytes(self.1))?;
        tuple.end()
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            let data = self.timestamp_bytes();
            serializer.serialize_newtype_struct(MSGPACK_EXT_STRUCT, &Ext(TIMESTAMP_EXT, &data))
        }
    }
}

impl<'de> Deserialize<'de> for DateTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            DateTime::parse_iso(&text)
                .ok_or_else(|| de::Error::custom("DateTime is not a valid ISO 8601 date"))
        } else {
            deserializer.deserialize_newtype_struct(MSGPACK_EXT_STRUCT, ExtVisitor)
        }
    }
}

/// Reads a timestamp extension through `rmp_serde`'s `_ExtStruct` newtype.
struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = DateTime;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack timestamp extension")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(2, self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let data = seq
            .next_element_seed(BytesSeed)?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if tag != TIMESTAMP_EXT {
            return Err(de::Error::custom(format!(
                "extension type {tag} is not a timestamp"
            )));
        }
        DateTime::from_timestamp_bytes(&data)
            .ok_or_else(|| de::Error::custom("invalid MessagePack timestamp"))
    }
}

struct BytesSeed;

impl<'de> de::DeserializeSeed<'de> for BytesSeed {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

// Proleptic Gregorian calendar conversions (Howard Hinnant's `days_from_civil` /
// `civil_from_days`), relative to 1970-01-01.

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_msgpack<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .unwrap();
        out
    }

    #[test]
    fn sample_in_json_has_the_official_shape() {
        let value = serde_json::to_value(ComplexObject::sample()).unwrap();
        assert_eq!(
            value,
            json!({
                "String": "hello world",
                "IntArray": [1, 2, 3],
                "ByteArray": "AQID",
                "Guid": "00010203-0405-0607-0706-050403020100",
                "DateTime": "2000-01-01T00:00:00Z",
            })
        );
    }

    #[test]
    fn json_round_trip_is_exact() {
        let text = r#"{"ByteArray":"aGVsbG8=","DateTime":"2002-04-01T10:20:15Z","Guid":"00010203-0405-0607-0706-050403020100","IntArray":[1,2,3,255],"String":"Hello, World!"}"#;
        let parsed: ComplexObject = serde_json::from_str(text).unwrap();
        assert_eq!(parsed.byte_array, Some(ByteArray(b"hello".to_vec())));
        let back: serde_json::Value = serde_json::to_value(&parsed).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn msgpack_uses_bin_and_timestamp_extension() {
        let bytes = to_msgpack(&ComplexObject::sample());
        // ByteArray: bin8 of length 3.
        assert!(bytes.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]));
        // DateTime: fixext4, type -1, 946684800 seconds.
        let ts = 946_684_800u32.to_be_bytes();
        assert!(
            bytes
                .windows(6)
                .any(|w| w == [0xd6, 0xff, ts[0], ts[1], ts[2], ts[3]])
        );
        let back: ComplexObject = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, ComplexObject::sample());
    }

    #[test]
    fn timestamps_of_every_width_round_trip() {
        for dt in [
            DateTime::utc(0, 0),
            DateTime::utc(1_017_656_415, 0),
            DateTime::utc(1_017_656_415, 123_456_700),
            DateTime::utc(17_179_869_184, 0),
            DateTime::utc(-1, 500_000_000),
            DateTime::utc(MIN_VALUE_SECS, 0),
        ] {
            let bytes = to_msgpack(&dt);
            let back: DateTime = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, dt, "{dt}");
        }
        assert_eq!(to_msgpack(&DateTime::utc(1, 1_000)).len(), 10); // fixext8
        assert_eq!(to_msgpack(&DateTime::utc(-1, 0)).len(), 15); // ext8 with 12 bytes
    }

    #[test]
    fn iso_parsing_and_formatting() {
        let cases = [
            ("2002-04-01T10:20:15Z", "2002-04-01T10:20:15Z"),
            ("2002-04-01T10:20:15.000Z", "2002-04-01T10:20:15Z"),
            (
                "2002-04-01T10:20:15.1234567Z",
                "2002-04-01T10:20:15.1234567Z",
            ),
            (
                "2002-04-01T10:20:15.12345678Z",
                "2002-04-01T10:20:15.1234567Z",
            ),
            ("2002-04-01T10:20:15.5", "2002-04-01T10:20:15.5"),
            ("2002-04-01T12:20:15+02:00", "2002-04-01T10:20:15Z"),
            ("2002-04-01T10:20", "2002-04-01T10:20:00"),
            ("2002-04-01", "2002-04-01T00:00:00"),
            ("0001-01-01T00:00:00", "0001-01-01T00:00:00"),
            ("2000-02-29T23:59:59Z", "2000-02-29T23:59:59Z"),
        ];
        for (input, expected) in cases {
            let parsed = DateTime::parse_iso(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(parsed.to_string(), expected, "{input}");
        }
        for bad in [
            "",
            "2002-13-01",
            "2001-02-29",
            "2002-04-01T25:00:00Z",
            "2002-04-01X",
            "2002-04-01T10:20:15.Z",
            "yesterday",
        ] {
            assert!(DateTime::parse_iso(bad).is_none(), "{bad}");
        }
        assert_eq!(DateTime::default().to_string(), "0001-01-01T00:00:00");
    }

    #[test]
    fn guid_formats() {
        let d = "00010203-0405-0607-0706-050403020100";
        let g = Guid::parse(d).unwrap();
        assert_eq!(g.to_string(), d);
        assert_eq!(
            Guid::parse("000102030405060707060504030201FF")
                .unwrap()
                .to_string(),
            "00010203-0405-0607-0706-0504030201ff"
        );
        assert_eq!(Guid::parse(&format!("{{{d}}}")), Some(g));
        assert_eq!(Guid::parse(&format!("({d})")), Some(g));
        assert_eq!(Guid::parse("not-a-guid"), None);
        assert_eq!(Guid::parse("+0010203-0405-0607-0706-050403020100"), None);
    }

    #[test]
    fn custom_object_accepts_both_casings() {
        let a: CustomObject = serde_json::from_value(json!({"Name": "test", "Value": 42})).unwrap();
        let b: CustomObject = serde_json::from_value(json!({"name": "test", "value": 42})).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"Name": "test", "Value": 42})
        );
    }
}
