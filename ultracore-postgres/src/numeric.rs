//! [`Minor`]: an amount in minor units (`i128`) as a PostgreSQL `NUMERIC`, in the binary wire
//! format, so read-model rows go through binary `COPY` and sums come back exact.
//!
//! The format: `ndigits: i16, weight: i16, sign: u16, dscale: u16`, then `ndigits` base-10000
//! digits, most significant first; the value is `Σ digit[i] · 10000^(weight - i)`.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// An integer number of minor units, carried as `NUMERIC` (scale 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor(pub i128);

const NBASE: u128 = 10_000;
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
/// Base-10000 digits of the largest `u128` (about 3.4 · 10^38).
const DIGITS_MAX: usize = 10;

impl ToSql for Minor {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let mut rest = self.0.unsigned_abs();
        // Least significant first, then reversed.
        let mut digits = [0i16; DIGITS_MAX];
        let mut n = 0;
        while rest > 0 {
            digits[n] = (rest % NBASE) as i16;
            rest /= NBASE;
            n += 1;
        }
        let weight = n as i16 - 1;
        // Trailing zero digits are implied by the weight (PostgreSQL strips them too).
        let skip = digits[..n].iter().take_while(|d| **d == 0).count();
        let kept = &digits[skip..n];
        let sign = if self.0 < 0 { SIGN_NEG } else { SIGN_POS };
        out.extend_from_slice(&(kept.len() as i16).to_be_bytes());
        out.extend_from_slice(&(if n == 0 { 0 } else { weight }).to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        for d in kept.iter().rev() {
            out.extend_from_slice(&d.to_be_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Minor {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Minor, Box<dyn Error + Sync + Send>> {
        let word = |i: usize| -> Result<[u8; 2], Box<dyn Error + Sync + Send>> {
            raw.get(i..i + 2)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| "numeric: truncated".into())
        };
        let ndigits = i16::from_be_bytes(word(0)?);
        let weight = i16::from_be_bytes(word(2)?);
        let sign = u16::from_be_bytes(word(4)?);
        if sign != SIGN_POS && sign != SIGN_NEG {
            return Err("numeric: NaN or infinity is not an amount".into());
        }
        let mut value: i128 = 0;
        for i in 0..ndigits.max(0) as usize {
            let d = i16::from_be_bytes(word(8 + 2 * i)?);
            if !(0..10_000).contains(&d) {
                return Err("numeric: bad digit".into());
            }
            // Digit i has weight `weight - i`: negative weights are fractions.
            if (weight as i32) - (i as i32) < 0 {
                if d != 0 {
                    return Err("numeric: not a whole number of minor units".into());
                }
                continue;
            }
            value = value
                .checked_mul(NBASE as i128)
                .and_then(|v| v.checked_add(d as i128))
                .ok_or("numeric: out of range")?;
        }
        // Digits implied by the weight after the last stored one are zeros.
        let stored_int = (ndigits as i32).min(weight as i32 + 1).max(0);
        for _ in stored_int..(weight as i32 + 1) {
            value = value
                .checked_mul(NBASE as i128)
                .ok_or("numeric: out of range")?;
        }
        Ok(Minor(if sign == SIGN_NEG { -value } else { value }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: i128) -> i128 {
        let mut buf = BytesMut::new();
        Minor(v).to_sql(&Type::NUMERIC, &mut buf).expect("encode");
        Minor::from_sql(&Type::NUMERIC, &buf).expect("decode").0
    }

    #[test]
    fn integers_round_trip() {
        for v in [
            0,
            1,
            -1,
            9_999,
            10_000,
            -10_000,
            123_400_000_000,
            1_000_000_000_000_000_000_000_000,
            i128::MAX,
            -i128::MAX,
        ] {
            assert_eq!(round_trip(v), v, "{v}");
        }
    }

    #[test]
    fn fractions_are_refused() {
        // 1.5: ndigits 2, weight 0, positive, dscale 1, digits [1, 5000].
        let raw = [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert!(Minor::from_sql(&Type::NUMERIC, &raw).is_err());
        // 2.0000 with a zero fraction digit is fine.
        let raw = [0, 2, 0, 0, 0, 0, 0, 4, 0, 2, 0, 0];
        assert_eq!(Minor::from_sql(&Type::NUMERIC, &raw).expect("whole").0, 2);
    }
}
