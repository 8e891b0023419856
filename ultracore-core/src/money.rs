//! Money: `Currency`, the non-negative `Amount`, the signed `SignedAmount`, `RoundingMode` and `MoneyError`.
//!
//! Amounts are stored as integer minor units (`i128`) so the ledger's hot path is integer arithmetic;
//! the public face is [`rust_decimal::Decimal`]. Every operation is checked: there are no `Add`/`Sub`
//! operator impls, because they would have to panic or wrap. Every rounding names its [`RoundingMode`].
//!
//! ```
//! use ultracore_core::money::{Amount, Currency, RoundingMode};
//! use rust_decimal::Decimal;
//!
//! let price = Amount::parse("10.50", Currency::USD)?;
//! let fee = price.checked_mul(Decimal::new(15, 3), RoundingMode::HalfEven)?; // 1.5 %
//! assert_eq!(fee.to_string(), "0.16");
//! assert_eq!(price.checked_add(fee)?.to_string(), "10.66");
//! assert!(Amount::parse("10.005", Currency::USD).is_err());
//! # Ok::<(), ultracore_core::money::MoneyError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// Shortest currency code accepted (ISO 4217 codes have three letters).
const CODE_LEN_MIN: usize = 3;
/// Longest currency code accepted; also the size of the inline code buffer.
const CODE_LEN_MAX: usize = 8;
/// Error messages quote at most this many characters of user input.
const ERROR_INPUT_CHARS_MAX: usize = 16;
/// `Decimal` holds at most 28 fractional digits.
const DECIMAL_SCALE_MAX: u32 = 28;

/// Why a money value could not be built or computed. Each variant has a stable [`code`](MoneyError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The text is not a plain decimal number such as `10.50` (no sign, exponent, spaces or leading zeros).
    #[error(
        "invalid amount format: expected digits with an optional '.' and fraction, like 10.50"
    )]
    InvalidFormat,
    /// More fractional digits than the currency has minor units.
    #[error("too many decimal places: {found} given, the currency allows {allowed}")]
    TooManyDecimals {
        /// The currency's minor units.
        allowed: u8,
        /// Fractional digits given.
        found: usize,
    },
    /// The amount would be negative where only non-negative amounts are allowed.
    #[error("amount must not be negative")]
    Negative,
    /// The amount exceeds 10^28 - 1 minor units.
    #[error("amount overflow: the limit is 10^28 - 1 minor units")]
    Overflow,
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: expected {expected:#}, found {found:#}")]
    CurrencyMismatch {
        /// Currency of the left-hand operand.
        expected: Currency,
        /// Currency of the right-hand operand.
        found: Currency,
    },
    /// Not a built-in currency code (input truncated to 16 characters).
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    /// Not a valid custom currency (input truncated to 16 characters).
    #[error("invalid currency {0:?}: expected 3 to 8 characters A-Z/0-9 starting with a letter, at most 18 minor units, and the built-in minor units for a built-in code")]
    InvalidCurrency(String),
}

impl MoneyError {
    /// Stable snake_case code for APIs and docs; never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            MoneyError::InvalidFormat => "invalid_amount_format",
            MoneyError::TooManyDecimals { .. } => "too_many_decimals",
            MoneyError::Negative => "negative_amount",
            MoneyError::Overflow => "amount_overflow",
            MoneyError::CurrencyMismatch { .. } => "currency_mismatch",
            MoneyError::UnknownCurrency(_) => "unknown_currency",
            MoneyError::InvalidCurrency(_) => "invalid_currency",
        }
    }
}

/// Quotes untrusted input in an error without letting it grow the error unboundedly.
fn truncated(input: &str) -> String {
    input.chars().take(ERROR_INPUT_CHARS_MAX).collect()
}

/// How to round a value that falls between two representable amounts.
///
/// The half-way modes act on the magnitude: `HalfUp` rounds -2.5 to -3 (away from zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Nearest; ties to the even neighbour (banker's rounding).
    HalfEven,
    /// Nearest; ties away from zero.
    HalfUp,
    /// Nearest; ties toward zero.
    HalfDown,
    /// Truncate.
    TowardZero,
    /// Any remainder rounds away from zero.
    AwayFromZero,
    /// Toward negative infinity.
    Floor,
    /// Toward positive infinity.
    Ceiling,
}

impl From<RoundingMode> for RoundingStrategy {
    fn from(mode: RoundingMode) -> Self {
        match mode {
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfDown => RoundingStrategy::MidpointTowardZero,
            RoundingMode::TowardZero => RoundingStrategy::ToZero,
            RoundingMode::AwayFromZero => RoundingStrategy::AwayFromZero,
            RoundingMode::Floor => RoundingStrategy::ToNegativeInfinity,
            RoundingMode::Ceiling => RoundingStrategy::ToPositiveInfinity,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Currency
// ---------------------------------------------------------------------------------------------

/// ISO 4217 currency (or a custom one): code + number of minor units. Copy, 10 bytes.
///
/// `Display` (and `Debug`) print the code. The alternate form `{:#}` prints the [`FromStr`] form:
/// the plain code for built-ins, `CODE:N` for custom currencies (e.g. `USDC:6`); serde uses that form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    /// ASCII `[A-Z0-9]`, zero-padded after `len`.
    code: [u8; CODE_LEN_MAX],
    len: u8,
    minor_units: u8,
}

const _: () = assert!(std::mem::size_of::<Currency>() == 10);

/// Declares the built-in constants and the table `from_code` searches, from one list.
macro_rules! builtin_currencies {
    ($($name:ident = $units:literal, $label:literal;)*) => {
        impl Currency {
            $(
                #[doc = concat!($label, " (", stringify!($name), "), ", stringify!($units), " minor units.")]
                pub const $name: Currency = Currency::builtin(stringify!($name), $units);
            )*
        }
        /// Every built-in currency, the only ones [`Currency::from_code`] knows.
        const BUILTINS: &[Currency] = &[$(Currency::$name),*];
    };
}

builtin_currencies! {
    USD = 2, "US dollar";
    EUR = 2, "Euro";
    GBP = 2, "Pound sterling";
    JPY = 0, "Japanese yen";
    CHF = 2, "Swiss franc";
    CAD = 2, "Canadian dollar";
    AUD = 2, "Australian dollar";
    NZD = 2, "New Zealand dollar";
    SEK = 2, "Swedish krona";
    NOK = 2, "Norwegian krone";
    DKK = 2, "Danish krone";
    PLN = 2, "Polish zloty";
    CZK = 2, "Czech koruna";
    HUF = 2, "Hungarian forint";
    SGD = 2, "Singapore dollar";
    HKD = 2, "Hong Kong dollar";
    CNY = 2, "Chinese yuan renminbi";
    INR = 2, "Indian rupee";
    BRL = 2, "Brazilian real";
    MXN = 2, "Mexican peso";
    ZAR = 2, "South African rand";
    KRW = 0, "South Korean won";
    KWD = 3, "Kuwaiti dinar";
    BHD = 3, "Bahraini dinar";
    OMR = 3, "Omani rial";
    JOD = 3, "Jordanian dinar";
    TND = 3, "Tunisian dinar";
    CLP = 0, "Chilean peso";
    ISK = 0, "Icelandic krona";
    AED = 2, "UAE dirham";
    SAR = 2, "Saudi riyal";
    ILS = 2, "Israeli new shekel";
    TRY = 2, "Turkish lira";
    THB = 2, "Thai baht";
    IDR = 2, "Indonesian rupiah";
    MYR = 2, "Malaysian ringgit";
    PHP = 2, "Philippine peso";
}

impl Currency {
    /// Most minor units a currency may have (e.g. 18 for many crypto tokens).
    pub const MINOR_UNITS_MAX: u8 = 18;

    /// Validates a code and minor units; `None` if invalid. Shared by the constants and `custom`.
    const fn from_parts(code: &str, minor_units: u8) -> Option<Currency> {
        let bytes = code.as_bytes();
        if bytes.len() < CODE_LEN_MIN || bytes.len() > CODE_LEN_MAX {
            return None;
        }
        if minor_units > Self::MINOR_UNITS_MAX || !bytes[0].is_ascii_uppercase() {
            return None;
        }
        let mut buf = [0u8; CODE_LEN_MAX];
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !(b.is_ascii_uppercase() || b.is_ascii_digit()) {
                return None;
            }
            buf[i] = b;
            i += 1;
        }
        // The length check above bounds len to CODE_LEN_MAX (8), so the cast is lossless.
        Some(Currency {
            code: buf,
            len: bytes.len() as u8,
            minor_units,
        })
    }

    /// Builds a built-in constant. Only ever evaluated at compile time (in `const` items),
    /// so an invalid table entry fails the build rather than panicking at run time.
    const fn builtin(code: &str, minor_units: u8) -> Currency {
        match Currency::from_parts(code, minor_units) {
            Some(currency) => currency,
            None => panic!("invalid built-in currency"),
        }
    }

    /// Looks up a built-in currency by its ISO 4217 code (exact, upper case).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        builtin_by_code(code).ok_or_else(|| MoneyError::UnknownCurrency(truncated(code)))
    }

    /// A custom currency: 3 to 8 characters `[A-Z0-9]`, the first a letter, and
    /// `minor_units <= MINOR_UNITS_MAX`. A built-in code is accepted only with the built-in's
    /// minor units (it then equals the built-in), so "USD" can never mean two things.
    pub fn custom(code: &str, minor_units: u8) -> Result<Currency, MoneyError> {
        let invalid = || MoneyError::InvalidCurrency(truncated(code));
        let currency = Currency::from_parts(code, minor_units).ok_or_else(invalid)?;
        match builtin_by_code(code) {
            Some(builtin) if builtin != currency => Err(invalid()),
            _ => Ok(currency),
        }
    }

    /// The code's bytes, zero-padded to 8, and its length (for hashing without a `str`).
    pub(crate) fn code_word(&self) -> ([u8; CODE_LEN_MAX], u8) {
        (self.code, self.len)
    }

    /// The code, e.g. `"USD"` or `"USDC"`.
    pub fn code(&self) -> &str {
        // Constructors only store ASCII and len <= 8, so neither fallback is ever taken.
        let bytes = self.code.get(..usize::from(self.len)).unwrap_or(&[]);
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// Digits after the decimal point (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_units(&self) -> u8 {
        self.minor_units
    }

    /// Whether this is one of the built-in ISO 4217 currencies.
    pub fn is_builtin(&self) -> bool {
        BUILTINS.contains(self)
    }
}

fn builtin_by_code(code: &str) -> Option<Currency> {
    BUILTINS.iter().find(|c| c.code() == code).copied()
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())?;
        if f.alternate() && !self.is_builtin() {
            write!(f, ":{}", self.minor_units)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    /// `"USD"` (built-in only) or `"CODE:N"` (custom; for a built-in code N must match).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((code, units)) = s.split_once(':') else {
            return Currency::from_code(s);
        };
        let invalid = || MoneyError::InvalidCurrency(truncated(s));
        // Canonical digits only ("6", not "06" or "+6"), so the text form of a currency is unique.
        let canonical = match units.as_bytes() {
            [d] => d.is_ascii_digit(),
            [first, second] => (b'1'..=b'9').contains(first) && second.is_ascii_digit(),
            _ => false,
        };
        if !canonical {
            return Err(invalid());
        }
        let minor_units: u8 = units.parse().map_err(|_| invalid())?;
        Currency::custom(code, minor_units).map_err(|_| invalid())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{self:#}"))
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CurrencyVisitor;
        impl Visitor<'_> for CurrencyVisitor {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a currency code such as \"USD\" or \"USDC:6\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Currency, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CurrencyVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Integer helpers shared by Amount and SignedAmount
// ---------------------------------------------------------------------------------------------

/// 10^28 - 1: the largest magnitude in minor units; fits Decimal's 96-bit mantissa.
const MINOR_MAX: i128 = 10i128.pow(28) - 1;
const _: () = assert!(MINOR_MAX < 1i128 << 96);
// The largest minor unit count times the largest magnitude must still be renderable by Decimal.
const _: () = assert!((Currency::MINOR_UNITS_MAX as u32) <= DECIMAL_SCALE_MAX);

fn pow10(exp: u32) -> Option<u128> {
    10u128.checked_pow(exp)
}

fn check_currency(expected: Currency, found: Currency) -> Result<(), MoneyError> {
    if expected == found {
        Ok(())
    } else {
        Err(MoneyError::CurrencyMismatch { expected, found })
    }
}

/// Range-checks a signed minor value.
fn checked_magnitude(minor: i128) -> Result<i128, MoneyError> {
    if minor.unsigned_abs() > MINOR_MAX.unsigned_abs() {
        Err(MoneyError::Overflow)
    } else {
        Ok(minor)
    }
}

/// Parses `^(0|[1-9][0-9]*)(\.[0-9]+)?$` into minor units. Allocation-free and linear in the input.
fn parse_magnitude(s: &str, currency: Currency) -> Result<i128, MoneyError> {
    let is_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    if !is_digits(int) || (int.len() > 1 && int.starts_with('0')) {
        return Err(MoneyError::InvalidFormat);
    }
    if frac.is_some_and(|f| !is_digits(f)) {
        return Err(MoneyError::InvalidFormat);
    }
    let frac = frac.unwrap_or("");
    let allowed = currency.minor_units();
    if frac.len() > usize::from(allowed) {
        return Err(MoneyError::TooManyDecimals {
            allowed,
            found: frac.len(),
        });
    }
    let mut minor: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        // Stops at the first overflow, so very long inputs cost no more than a scan.
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(MoneyError::Overflow)?;
    }
    // frac.len() <= allowed <= 18 here, so the exponent is small.
    let pad = pow10(u32::from(allowed) - frac.len() as u32).ok_or(MoneyError::Overflow)?;
    let pad = i128::try_from(pad).map_err(|_| MoneyError::Overflow)?;
    let minor = minor.checked_mul(pad).ok_or(MoneyError::Overflow)?;
    checked_magnitude(minor)
}

/// Exact Decimal -> minor units (sign kept). Trailing zeros do not count as decimals.
fn decimal_to_minor(d: Decimal, currency: Currency) -> Result<i128, MoneyError> {
    let d = d.normalize();
    let allowed = currency.minor_units();
    if d.scale() > u32::from(allowed) {
        let found = usize::try_from(d.scale()).unwrap_or(usize::MAX);
        return Err(MoneyError::TooManyDecimals { allowed, found });
    }
    let pad = pow10(u32::from(allowed) - d.scale()).ok_or(MoneyError::Overflow)?;
    let pad = i128::try_from(pad).map_err(|_| MoneyError::Overflow)?;
    let minor = d.mantissa().checked_mul(pad).ok_or(MoneyError::Overflow)?;
    checked_magnitude(minor)
}

/// Minor units -> Decimal with scale = minor units (10.50, not 10.5).
fn minor_to_decimal(minor: i128, currency: Currency) -> Decimal {
    Decimal::try_from_i128_with_scale(minor, u32::from(currency.minor_units())).expect(
        "|minor| <= 10^28 - 1 < 2^96 and minor units <= 18 <= 28, both enforced by constructors",
    )
}

/// Renders minor units with the full currency scale, straight from the integer.
fn write_minor(f: &mut fmt::Formatter<'_>, minor: i128, currency: Currency) -> fmt::Result {
    let units = currency.minor_units();
    let magnitude = minor.unsigned_abs();
    // minor units <= 18, so 10^units always exists; the fallback is unreachable.
    let scale = pow10(u32::from(units)).unwrap_or(1);
    let sign = if minor < 0 { "-" } else { "" };
    let (int, frac) = (magnitude / scale, magnitude % scale);
    if units == 0 {
        write!(f, "{sign}{int}")
    } else {
        write!(f, "{sign}{int}.{frac:0width$}", width = usize::from(units))
    }
}

/// A 256-bit unsigned integer as little-endian 64-bit limbs, just enough for exact `checked_mul`.
type Wide = [u64; 4];

/// Full 128 x 128 -> 256-bit product.
fn mul_wide(a: u128, b: u128) -> Wide {
    let split = |x: u128| [x as u64, (x >> 64) as u64];
    let (a, b) = (split(a), split(b));
    let mut out: Wide = [0; 4];
    for (i, &ai) in a.iter().enumerate() {
        let mut carry: u128 = 0;
        for (j, &bj) in b.iter().enumerate() {
            // (2^64-1)^2 + 2 (2^64-1) = 2^128 - 1: cannot overflow.
            let t = u128::from(ai) * u128::from(bj) + u128::from(out[i + j]) + carry;
            out[i + j] = t as u64;
            carry = t >> 64;
        }
        out[i + 2] = carry as u64;
    }
    out
}

/// Divides in place by a non-zero `divisor`, returning the remainder.
fn div_wide(n: &mut Wide, divisor: u64) -> u64 {
    let divisor = u128::from(divisor.max(1));
    let mut rem: u128 = 0;
    for limb in n.iter_mut().rev() {
        let cur = (rem << 64) | u128::from(*limb);
        *limb = (cur / divisor) as u64;
        rem = cur % divisor;
    }
    rem as u64
}

/// Whether a truncated magnitude `q` (with `rem / divisor` left over) must be rounded up.
fn round_up(q: u128, rem: u128, divisor: u128, negative: bool, mode: RoundingMode) -> bool {
    if rem == 0 {
        return false;
    }
    // rem < divisor <= 10^28, so doubling cannot overflow.
    let half = (rem * 2).cmp(&divisor);
    match mode {
        RoundingMode::TowardZero => false,
        RoundingMode::AwayFromZero => true,
        RoundingMode::Floor => negative,
        RoundingMode::Ceiling => !negative,
        RoundingMode::HalfUp => half != Ordering::Less,
        RoundingMode::HalfDown => half == Ordering::Greater,
        RoundingMode::HalfEven => match half {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => q % 2 == 1,
        },
    }
}

/// `round(minor * factor)` computed exactly in 256 bits, then rounded once by `mode`.
///
/// `Decimal * Decimal` would silently round products that need more than 28 digits,
/// which turns one rounding into two (wrong for Floor/Ceiling and for near-half values).
fn mul_minor(minor: i128, factor: Decimal, mode: RoundingMode) -> Result<i128, MoneyError> {
    let (mantissa, mut scale) = (factor.mantissa(), factor.scale());
    if scale > DECIMAL_SCALE_MAX {
        return Err(MoneyError::Overflow); // Decimal guarantees this never happens.
    }
    let negative = minor != 0 && mantissa != 0 && ((minor < 0) != (mantissa < 0));
    let mut n = mul_wide(minor.unsigned_abs(), mantissa.unsigned_abs());
    // Divide by 10^scale in chunks that fit a u64, composing the remainder.
    let (mut rem, mut divisor): (u128, u128) = (0, 1);
    while scale > 0 {
        let step = scale.min(19);
        let d = 10u64.pow(step); // step <= 19: 10^19 < 2^64.
        rem += u128::from(div_wide(&mut n, d)) * divisor; // rem < 10^28 throughout.
        divisor *= u128::from(d);
        scale -= step;
    }
    if n[2] != 0 || n[3] != 0 {
        return Err(MoneyError::Overflow);
    }
    let q = u128::from(n[0]) | (u128::from(n[1]) << 64);
    let magnitude = if round_up(q, rem, divisor, negative, mode) {
        q.checked_add(1).ok_or(MoneyError::Overflow)?
    } else {
        q
    };
    let magnitude = i128::try_from(magnitude).map_err(|_| MoneyError::Overflow)?;
    checked_magnitude(if negative { -magnitude } else { magnitude })
}

/// Serializes a `Display` value as a string without allocating.
struct AsStr<'a, T: fmt::Display>(&'a T);

impl<T: fmt::Display> Serialize for AsStr<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

/// The wire form shared by `Amount` and `SignedAmount`: `{"value":"10.50","currency":"USD"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountWire {
    value: String,
    currency: Currency,
}

fn serialize_amount<S: Serializer, T: fmt::Display>(
    serializer: S,
    name: &'static str,
    value: &T,
    currency: Currency,
) -> Result<S::Ok, S::Error> {
    let mut state = serializer.serialize_struct(name, 2)?;
    state.serialize_field("value", &AsStr(value))?;
    state.serialize_field("currency", &currency)?;
    state.end()
}

// ---------------------------------------------------------------------------------------------
// Amount
// ---------------------------------------------------------------------------------------------

/// A non-negative amount of money in one currency. Invariant: 0 <= minor <= Amount::MINOR_MAX.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    minor: i128,
    currency: Currency,
}

impl Amount {
    /// Largest amount in minor units: 10^28 - 1 (fits `Decimal`'s 96-bit mantissa).
    pub const MINOR_MAX: i128 = MINOR_MAX;

    /// Parses `^(0|[1-9][0-9]*)(\.[0-9]+)?$` with at most `currency.minor_units()` fraction digits.
    ///
    /// Extra fraction digits are rejected even when they are zeros ("10.000" USD), because a
    /// caller who sends them probably believes in a precision the currency does not have.
    /// A leading '-' gives `Negative`; any other deviation gives `InvalidFormat`.
    pub fn parse(s: &str, currency: Currency) -> Result<Amount, MoneyError> {
        if let Some(rest) = s.strip_prefix('-') {
            return match parse_magnitude(rest, currency) {
                Err(MoneyError::InvalidFormat) => Err(MoneyError::InvalidFormat),
                _ => Err(MoneyError::Negative),
            };
        }
        let minor = parse_magnitude(s, currency)?;
        Ok(Amount { minor, currency })
    }

    /// Exact conversion; fails if `d` is negative, has more significant decimals than the currency
    /// allows (trailing zeros are ignored: 10.500 USD is fine), or exceeds `MINOR_MAX`.
    pub fn from_decimal(d: Decimal, currency: Currency) -> Result<Amount, MoneyError> {
        if d.is_sign_negative() && !d.is_zero() {
            return Err(MoneyError::Negative);
        }
        Amount::from_minor(decimal_to_minor(d, currency)?, currency)
    }

    /// Rounds `d` to the currency's minor units with `mode`. A negative `d` is rejected before
    /// rounding, even if it would round to zero.
    pub fn from_decimal_rounded(
        d: Decimal,
        currency: Currency,
        mode: RoundingMode,
    ) -> Result<Amount, MoneyError> {
        if d.is_sign_negative() && !d.is_zero() {
            return Err(MoneyError::Negative);
        }
        let rounded = d.round_dp_with_strategy(u32::from(currency.minor_units()), mode.into());
        Amount::from_minor(decimal_to_minor(rounded, currency)?, currency)
    }

    /// From integer minor units (cents for USD); `Negative` below zero, `Overflow` above `MINOR_MAX`.
    pub fn from_minor(minor: i128, currency: Currency) -> Result<Amount, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Amount {
            minor: checked_magnitude(minor)?,
            currency,
        })
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Amount {
        Amount { minor: 0, currency }
    }

    /// The value in minor units.
    pub fn minor(&self) -> i128 {
        self.minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The value as a `Decimal` whose scale is the currency's minor units (10.50, not 10.5).
    pub fn to_decimal(&self) -> Decimal {
        minor_to_decimal(self.minor, self.currency)
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// `self + other`; `CurrencyMismatch` or `Overflow`.
    pub fn checked_add(self, other: Amount) -> Result<Amount, MoneyError> {
        check_currency(self.currency, other.currency)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Amount::from_minor(minor, self.currency)
    }

    /// `self - other`; `CurrencyMismatch`, or `Negative` if `other > self`.
    pub fn checked_sub(self, other: Amount) -> Result<Amount, MoneyError> {
        check_currency(self.currency, other.currency)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Amount::from_minor(minor, self.currency)
    }

    /// `self * factor` rounded once, exactly, to the currency's minor units (fees, interest).
    /// A negative `factor` gives `Negative` (even when the result would round to zero).
    pub fn checked_mul(self, factor: Decimal, mode: RoundingMode) -> Result<Amount, MoneyError> {
        if factor.is_sign_negative() && !factor.is_zero() {
            return Err(MoneyError::Negative);
        }
        Amount::from_minor(mul_minor(self.minor, factor, mode)?, self.currency)
    }

    /// The smaller of two amounts; `CurrencyMismatch` if they differ in currency.
    pub fn min(self, other: Amount) -> Result<Amount, MoneyError> {
        check_currency(self.currency, other.currency)?;
        Ok(if other.minor < self.minor {
            other
        } else {
            self
        })
    }

    /// The larger of two amounts; `CurrencyMismatch` if they differ in currency.
    pub fn max(self, other: Amount) -> Result<Amount, MoneyError> {
        check_currency(self.currency, other.currency)?;
        Ok(if other.minor > self.minor {
            other
        } else {
            self
        })
    }

    /// Compares two amounts; `CurrencyMismatch` if they differ in currency.
    pub fn checked_cmp(&self, other: &Amount) -> Result<Ordering, MoneyError> {
        check_currency(self.currency, other.currency)?;
        Ok(self.minor.cmp(&other.minor))
    }

    /// The same value as a `SignedAmount`.
    pub fn to_signed(self) -> SignedAmount {
        SignedAmount {
            minor: self.minor,
            currency: self.currency,
        }
    }
}

impl fmt::Display for Amount {
    /// The value with the full currency scale and no code: "10.50", "100" (JPY).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_minor(f, self.minor, self.currency)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} {:?}", self.currency)
    }
}

impl TryFrom<SignedAmount> for Amount {
    type Error = MoneyError;

    /// `Negative` if the signed amount is below zero.
    fn try_from(signed: SignedAmount) -> Result<Self, Self::Error> {
        Amount::from_minor(signed.minor, signed.currency)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            // Binary formats (snapshots): exact minor units, no decimal formatting.
            return (self.minor, self.currency).serialize(serializer);
        }
        serialize_amount(serializer, "Amount", self, self.currency)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            let (minor, currency) = <(i128, Currency)>::deserialize(deserializer)?;
            return Amount::from_minor(minor, currency).map_err(de::Error::custom);
        }
        let wire = AmountWire::deserialize(deserializer)?;
        Amount::parse(&wire.value, wire.currency).map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// SignedAmount
// ---------------------------------------------------------------------------------------------

/// A signed amount (balances). Invariant: |minor| <= SignedAmount::MINOR_MAX.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignedAmount {
    minor: i128,
    currency: Currency,
}

impl SignedAmount {
    /// Largest magnitude in minor units: 10^28 - 1. The range is symmetric, so negation never fails.
    pub const MINOR_MAX: i128 = MINOR_MAX;

    /// Like [`Amount::parse`] but accepts one leading '-' ("-0.00" is zero).
    pub fn parse(s: &str, currency: Currency) -> Result<SignedAmount, MoneyError> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let magnitude = parse_magnitude(digits, currency)?;
        let minor = if negative { -magnitude } else { magnitude };
        Ok(SignedAmount { minor, currency })
    }

    /// Exact conversion (see [`Amount::from_decimal`]), keeping the sign.
    pub fn from_decimal(d: Decimal, currency: Currency) -> Result<SignedAmount, MoneyError> {
        SignedAmount::from_minor(decimal_to_minor(d, currency)?, currency)
    }

    /// Rounds `d` to the currency's minor units with `mode`, keeping the sign.
    pub fn from_decimal_rounded(
        d: Decimal,
        currency: Currency,
        mode: RoundingMode,
    ) -> Result<SignedAmount, MoneyError> {
        let rounded = d.round_dp_with_strategy(u32::from(currency.minor_units()), mode.into());
        SignedAmount::from_decimal(rounded, currency)
    }

    /// From integer minor units; `Overflow` if `|minor| > MINOR_MAX`.
    pub fn from_minor(minor: i128, currency: Currency) -> Result<SignedAmount, MoneyError> {
        Ok(SignedAmount {
            minor: checked_magnitude(minor)?,
            currency,
        })
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> SignedAmount {
        SignedAmount { minor: 0, currency }
    }

    /// The value in minor units.
    pub fn minor(&self) -> i128 {
        self.minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The value as a `Decimal` whose scale is the currency's minor units (-3.00).
    pub fn to_decimal(&self) -> Decimal {
        minor_to_decimal(self.minor, self.currency)
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.minor < 0
    }

    /// Whether the amount is above zero.
    pub fn is_positive(&self) -> bool {
        self.minor > 0
    }

    /// `self + other`; `CurrencyMismatch` or `Overflow`.
    pub fn checked_add(self, other: SignedAmount) -> Result<SignedAmount, MoneyError> {
        check_currency(self.currency, other.currency)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        SignedAmount::from_minor(minor, self.currency)
    }

    /// `self - other`; `CurrencyMismatch` or `Overflow`.
    pub fn checked_sub(self, other: SignedAmount) -> Result<SignedAmount, MoneyError> {
        check_currency(self.currency, other.currency)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        SignedAmount::from_minor(minor, self.currency)
    }

    /// `-self`. Never fails (the range is symmetric); a `Result` for uniformity with the other
    /// checked operations. `Neg` is also implemented.
    pub fn checked_neg(self) -> Result<SignedAmount, MoneyError> {
        SignedAmount::from_minor(-self.minor, self.currency)
    }

    /// `self * factor` rounded once, exactly, to the currency's minor units.
    pub fn checked_mul(
        self,
        factor: Decimal,
        mode: RoundingMode,
    ) -> Result<SignedAmount, MoneyError> {
        SignedAmount::from_minor(mul_minor(self.minor, factor, mode)?, self.currency)
    }

    /// `|self|` as an `Amount`. Never fails: the magnitude bound is the same.
    pub fn abs_amount(self) -> Amount {
        Amount {
            minor: self.minor.abs(),
            currency: self.currency,
        }
    }

    /// Compares two amounts; `CurrencyMismatch` if they differ in currency.
    pub fn checked_cmp(&self, other: &SignedAmount) -> Result<Ordering, MoneyError> {
        check_currency(self.currency, other.currency)?;
        Ok(self.minor.cmp(&other.minor))
    }
}

impl std::ops::Neg for SignedAmount {
    type Output = SignedAmount;

    /// Infallible: |minor| <= MINOR_MAX is symmetric.
    fn neg(self) -> SignedAmount {
        SignedAmount {
            minor: -self.minor,
            currency: self.currency,
        }
    }
}

impl From<Amount> for SignedAmount {
    fn from(amount: Amount) -> Self {
        amount.to_signed()
    }
}

impl fmt::Display for SignedAmount {
    /// The value with the full currency scale and no code: "-3.00", "100" (JPY).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_minor(f, self.minor, self.currency)
    }
}

impl fmt::Debug for SignedAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} {:?}", self.currency)
    }
}

impl Serialize for SignedAmount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return (self.minor, self.currency).serialize(serializer);
        }
        serialize_amount(serializer, "SignedAmount", self, self.currency)
    }
}

impl<'de> Deserialize<'de> for SignedAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            let (minor, currency) = <(i128, Currency)>::deserialize(deserializer)?;
            return SignedAmount::from_minor(minor, currency).map_err(de::Error::custom);
        }
        let wire = AmountWire::deserialize(deserializer)?;
        SignedAmount::parse(&wire.value, wire.currency).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MODES: [RoundingMode; 7] = [
        RoundingMode::HalfEven,
        RoundingMode::HalfUp,
        RoundingMode::HalfDown,
        RoundingMode::TowardZero,
        RoundingMode::AwayFromZero,
        RoundingMode::Floor,
        RoundingMode::Ceiling,
    ];

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("test literal")
    }

    fn token18() -> Currency {
        Currency::custom("TOKEN", 18).expect("valid custom currency")
    }

    fn usd(s: &str) -> Amount {
        Amount::parse(s, Currency::USD).expect("test literal")
    }

    /// One table-driven check: `input` parsed in `currency` gives `expected` (Display or error).
    fn check(input: &str, currency: Currency, expected: Result<&str, MoneyError>) {
        let got = Amount::parse(input, currency).map(|a| a.to_string());
        assert_eq!(
            got.as_deref().map_err(Clone::clone),
            expected,
            "input {input:?} in {currency}"
        );
    }

    #[test]
    fn parse_accepts_the_strict_grammar() {
        check("0", Currency::USD, Ok("0.00"));
        check("10", Currency::USD, Ok("10.00"));
        check("10.5", Currency::USD, Ok("10.50"));
        check("10.50", Currency::USD, Ok("10.50"));
        check("0.01", Currency::USD, Ok("0.01"));
        check("100", Currency::JPY, Ok("100"));
        check("1.234", Currency::KWD, Ok("1.234"));
        check(
            "0.000000000000000001",
            token18(),
            Ok("0.000000000000000001"),
        );
    }

    #[test]
    fn parse_rejects_malformed_input() {
        use MoneyError::InvalidFormat;
        for input in [
            "", " 1", "1 ", "+1", "1.", ".5", "01", "00", "00.5", "1e5", "1E5", "1,00", "1.2.3",
            "--1", "-", "0x10", "١", "1_000", "NaN", "inf", "１", "1.-5", "-+1",
        ] {
            check(input, Currency::USD, Err(InvalidFormat));
        }
    }

    #[test]
    fn parse_rejects_signs() {
        check("-1", Currency::USD, Err(MoneyError::Negative));
        check("-0", Currency::USD, Err(MoneyError::Negative));
        check("-10.005", Currency::USD, Err(MoneyError::Negative));
        check("+1", Currency::USD, Err(MoneyError::InvalidFormat));
    }

    #[test]
    fn parse_rejects_more_decimals_than_the_currency_has() {
        let too_many = |allowed, found| Err(MoneyError::TooManyDecimals { allowed, found });
        check("10.000", Currency::USD, too_many(2, 3));
        check("10.005", Currency::USD, too_many(2, 3));
        check("1.0", Currency::JPY, too_many(0, 1));
        check("1.2345", Currency::KWD, too_many(3, 4));
        check("0.0000000000000000001", token18(), too_many(18, 19));
    }

    #[test]
    fn parse_enforces_minor_max() {
        let max = "9".repeat(28);
        check(&max, Currency::JPY, Ok(&max));
        check(
            &format!("1{}", "0".repeat(28)),
            Currency::JPY,
            Err(MoneyError::Overflow),
        );
        check(
            "99999999999999999999999999.99",
            Currency::USD,
            Ok("99999999999999999999999999.99"),
        );
        check(
            "100000000000000000000000000",
            Currency::USD,
            Err(MoneyError::Overflow),
        );
        check(
            "9999999999.999999999999999999",
            token18(),
            Ok("9999999999.999999999999999999"),
        );
        check("10000000000", token18(), Err(MoneyError::Overflow));
        // Far beyond i128: must fail cleanly, not wrap or panic.
        check(
            &"9".repeat(100_000),
            Currency::USD,
            Err(MoneyError::Overflow),
        );
        check(
            &format!("1.{}", "0".repeat(100_000)),
            Currency::USD,
            Err(MoneyError::TooManyDecimals {
                allowed: 2,
                found: 100_000,
            }),
        );
    }

    #[test]
    fn signed_parse_accepts_one_minus() {
        let parse = |s| SignedAmount::parse(s, Currency::USD).map(|a| a.to_string());
        assert_eq!(parse("-3"), Ok("-3.00".to_string()));
        assert_eq!(parse("-0.05"), Ok("-0.05".to_string()));
        assert_eq!(parse("-0.00"), Ok("0.00".to_string()));
        assert_eq!(parse("--3"), Err(MoneyError::InvalidFormat));
        assert_eq!(parse("+3"), Err(MoneyError::InvalidFormat));
        assert_eq!(parse("-"), Err(MoneyError::InvalidFormat));
        assert_eq!(
            parse("-1.001"),
            Err(MoneyError::TooManyDecimals {
                allowed: 2,
                found: 3
            })
        );
        assert_eq!(
            parse(&format!("-1{}", "0".repeat(26))),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(usd("10.5").to_string(), "10.50");
        assert_eq!(format!("{:?}", usd("10.5")), "10.50 USD");
        let neg = SignedAmount::from_minor(-300, Currency::USD).expect("in range");
        assert_eq!(neg.to_string(), "-3.00");
        assert_eq!(format!("{neg:?}"), "-3.00 USD");
        let yen = Amount::from_minor(100, Currency::JPY).expect("in range");
        assert_eq!(yen.to_string(), "100");
        assert_eq!(yen.to_decimal().to_string(), "100");
        assert_eq!(usd("10.5").to_decimal().to_string(), "10.50");
        assert_eq!(usd("10.5").to_decimal().scale(), 2);
    }

    #[test]
    fn currency_table() {
        assert_eq!(Currency::from_code("USD"), Ok(Currency::USD));
        assert_eq!(Currency::USD.minor_units(), 2);
        assert_eq!(Currency::JPY.minor_units(), 0);
        assert_eq!(Currency::KRW.minor_units(), 0);
        assert_eq!(Currency::KWD.minor_units(), 3);
        assert_eq!(Currency::TND.minor_units(), 3);
        assert_eq!(Currency::ISK.minor_units(), 0);
        assert_eq!(BUILTINS.len(), 37);
        for c in BUILTINS {
            assert!(c.is_builtin());
            assert_eq!(Currency::from_code(c.code()), Ok(*c));
            assert_eq!(c.code().len(), 3);
        }
        assert_eq!(
            Currency::from_code("usd"),
            Err(MoneyError::UnknownCurrency("usd".into()))
        );
        assert_eq!(
            Currency::from_code("XAU"),
            Err(MoneyError::UnknownCurrency("XAU".into()))
        );
        let long = "X".repeat(100);
        assert_eq!(
            Currency::from_code(&long),
            Err(MoneyError::UnknownCurrency("X".repeat(16)))
        );
    }

    #[test]
    fn custom_currencies() {
        let usdc = Currency::custom("USDC", 6).expect("valid");
        assert_eq!(
            (usdc.code(), usdc.minor_units(), usdc.is_builtin()),
            ("USDC", 6, false)
        );
        assert!(Currency::custom("ABC", 18).is_ok());
        assert!(Currency::custom("A2345678", 0).is_ok());
        assert_eq!(Currency::custom("USD", 2), Ok(Currency::USD));
        for (code, units) in [
            ("AB", 2),
            ("ABCDEFGHI", 2),
            ("1AB", 2),
            ("abc", 2),
            ("AB-", 2),
            ("ABC", 19),
            ("ÄBC", 2),
            ("", 0),
            ("USD", 3),
            ("AB C", 2),
        ] {
            assert!(
                matches!(
                    Currency::custom(code, units),
                    Err(MoneyError::InvalidCurrency(_))
                ),
                "{code}:{units}"
            );
        }
        assert_ne!(Currency::custom("ABC", 2), Currency::custom("ABC", 3));
    }

    #[test]
    fn currency_from_str_and_display() {
        let usdc = Currency::custom("USDC", 6).expect("valid");
        assert_eq!("USD".parse(), Ok(Currency::USD));
        assert_eq!("USD:2".parse(), Ok(Currency::USD));
        assert_eq!("USDC:6".parse(), Ok(usdc));
        assert_eq!(
            "TOK:18".parse::<Currency>().map(|c| c.minor_units()),
            Ok(18)
        );
        assert_eq!(
            "USDC".parse::<Currency>(),
            Err(MoneyError::UnknownCurrency("USDC".into()))
        );
        for bad in [
            "USD:3", "USDC:", "USDC:06", "USDC:+6", "USDC:19", "USDC:6:6", ":6", "usdc:6",
        ] {
            assert!(
                matches!(bad.parse::<Currency>(), Err(MoneyError::InvalidCurrency(_))),
                "{bad}"
            );
        }
        assert_eq!(usdc.to_string(), "USDC");
        assert_eq!(format!("{usdc:?}"), "USDC");
        assert_eq!(format!("{usdc:#}"), "USDC:6");
        assert_eq!(format!("{:#}", Currency::USD), "USD");
        assert_eq!(std::mem::size_of::<Currency>(), 10);
    }

    #[test]
    fn currency_serde() {
        let usdc = Currency::custom("USDC", 6).expect("valid");
        assert_eq!(
            serde_json::to_string(&Currency::USD).ok().as_deref(),
            Some("\"USD\"")
        );
        assert_eq!(
            serde_json::to_string(&usdc).ok().as_deref(),
            Some("\"USDC:6\"")
        );
        assert_eq!(
            serde_json::from_str::<Currency>("\"USDC:6\"").ok(),
            Some(usdc)
        );
        assert!(serde_json::from_str::<Currency>("\"USDC\"").is_err());
        assert!(serde_json::from_str::<Currency>("\"USD:3\"").is_err());
        assert!(serde_json::from_str::<Currency>("840").is_err());
    }

    #[test]
    fn from_minor_bounds() {
        let max = Amount::MINOR_MAX;
        assert_eq!(max, 10i128.pow(28) - 1);
        assert_eq!(
            Amount::from_minor(max, Currency::USD).map(|a| a.minor()),
            Ok(max)
        );
        assert_eq!(
            Amount::from_minor(max + 1, Currency::USD),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Amount::from_minor(-1, Currency::USD),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            Amount::from_minor(i128::MIN, Currency::USD),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            SignedAmount::from_minor(-max, Currency::USD).map(|a| a.minor()),
            Ok(-max)
        );
        assert_eq!(
            SignedAmount::from_minor(-max - 1, Currency::USD),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            SignedAmount::from_minor(i128::MIN, Currency::USD),
            Err(MoneyError::Overflow)
        );
        let top = Amount::from_minor(max, token18()).expect("in range");
        assert_eq!(
            top.to_decimal().to_string(),
            "9999999999.999999999999999999"
        );
        assert_eq!(Amount::zero(Currency::EUR).to_string(), "0.00");
        assert!(Amount::zero(Currency::EUR).is_zero());
    }

    #[test]
    fn checked_arithmetic() {
        let max = Amount::from_minor(Amount::MINOR_MAX, Currency::USD).expect("in range");
        let cent = usd("0.01");
        assert_eq!(usd("10.50").checked_add(usd("0.55")), Ok(usd("11.05")));
        assert_eq!(max.checked_add(cent), Err(MoneyError::Overflow));
        assert_eq!(max.checked_add(Amount::zero(Currency::USD)), Ok(max));
        assert_eq!(usd("1").checked_sub(usd("0.01")), Ok(usd("0.99")));
        assert_eq!(
            usd("1").checked_sub(usd("1")),
            Ok(Amount::zero(Currency::USD))
        );
        assert_eq!(usd("1").checked_sub(usd("1.01")), Err(MoneyError::Negative));
        let mismatch = MoneyError::CurrencyMismatch {
            expected: Currency::USD,
            found: Currency::EUR,
        };
        let eur = Amount::zero(Currency::EUR);
        assert_eq!(usd("1").checked_add(eur), Err(mismatch.clone()));
        assert_eq!(usd("1").checked_sub(eur), Err(mismatch.clone()));
        assert_eq!(usd("1").min(eur), Err(mismatch.clone()));
        assert_eq!(usd("1").min(usd("0.5")), Ok(usd("0.5")));
        assert_eq!(usd("1").max(usd("0.5")), Ok(usd("1")));
        assert_eq!(usd("1").checked_cmp(&usd("2")), Ok(Ordering::Less));
        // Same code, different minor units: still a mismatch.
        let a = Amount::zero(Currency::custom("TOK", 2).expect("valid"));
        let b = Amount::zero(Currency::custom("TOK", 3).expect("valid"));
        let error = a.checked_add(b).expect_err("different minor units");
        assert_eq!(
            error.to_string(),
            "currency mismatch: expected TOK:2, found TOK:3"
        );
    }

    #[test]
    fn signed_arithmetic() {
        let s = |x: &str| SignedAmount::parse(x, Currency::USD).expect("test literal");
        assert_eq!(s("1").checked_sub(s("3")), Ok(s("-2")));
        assert_eq!(s("-1").checked_add(s("3")), Ok(s("2")));
        assert_eq!(s("-1").checked_neg(), Ok(s("1")));
        assert_eq!(-s("2.5"), s("-2.5"));
        assert!(s("-1").is_negative() && !s("0").is_negative() && s("1").is_positive());
        assert_eq!(s("-2.5").abs_amount(), usd("2.5"));
        assert_eq!(SignedAmount::from(usd("2")), s("2"));
        assert_eq!(usd("2").to_signed(), s("2"));
        assert_eq!(Amount::try_from(s("-2")), Err(MoneyError::Negative));
        assert_eq!(Amount::try_from(s("2")), Ok(usd("2")));
        let min = SignedAmount::from_minor(-SignedAmount::MINOR_MAX, Currency::USD).expect("ok");
        assert_eq!(min.checked_sub(s("0.01")), Err(MoneyError::Overflow));
        assert_eq!(min.abs_amount().minor(), Amount::MINOR_MAX);
        assert!(matches!(
            s("1").checked_add(SignedAmount::zero(Currency::GBP)),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn from_decimal_is_exact() {
        assert_eq!(
            Amount::from_decimal(dec("10.5"), Currency::USD),
            Ok(usd("10.50"))
        );
        // Trailing zeros are not significant here (unlike parse, where they signal intent).
        assert_eq!(
            Amount::from_decimal(dec("10.5000"), Currency::USD),
            Ok(usd("10.50"))
        );
        assert_eq!(
            Amount::from_decimal(dec("10.005"), Currency::USD),
            Err(MoneyError::TooManyDecimals {
                allowed: 2,
                found: 3
            })
        );
        assert_eq!(
            Amount::from_decimal(dec("-0.01"), Currency::USD),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            Amount::from_decimal(dec("-0.00"), Currency::USD),
            Ok(usd("0"))
        );
        assert_eq!(
            Amount::from_decimal(Decimal::MAX, Currency::USD),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Amount::from_decimal(Decimal::MAX, Currency::JPY),
            Err(MoneyError::Overflow)
        );
        let max = Decimal::from_i128_with_scale(Amount::MINOR_MAX, 0);
        assert_eq!(
            Amount::from_decimal(max, Currency::JPY).map(|a| a.minor()),
            Ok(Amount::MINOR_MAX)
        );
        assert_eq!(
            Amount::from_decimal(Decimal::MAX, token18()),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            SignedAmount::from_decimal(dec("-1.5"), Currency::JPY),
            Err(MoneyError::TooManyDecimals {
                allowed: 0,
                found: 1
            })
        );
        assert_eq!(
            SignedAmount::from_decimal(dec("-1.5"), Currency::USD).map(|a| a.minor()),
            Ok(-150)
        );
    }

    #[test]
    fn from_decimal_rounded_names_its_mode() {
        let round = |s: &str, mode| {
            Amount::from_decimal_rounded(dec(s), Currency::USD, mode).map(|a| a.to_string())
        };
        let ok = |s: &str| Ok(s.to_string());
        assert_eq!(round("2.345", RoundingMode::HalfEven), ok("2.34"));
        assert_eq!(round("2.355", RoundingMode::HalfEven), ok("2.36"));
        assert_eq!(round("2.345", RoundingMode::HalfUp), ok("2.35"));
        assert_eq!(round("2.345", RoundingMode::HalfDown), ok("2.34"));
        assert_eq!(round("2.349", RoundingMode::TowardZero), ok("2.34"));
        assert_eq!(round("2.341", RoundingMode::AwayFromZero), ok("2.35"));
        assert_eq!(round("2.349", RoundingMode::Floor), ok("2.34"));
        assert_eq!(round("2.341", RoundingMode::Ceiling), ok("2.35"));
        assert_eq!(round("2.3", RoundingMode::Ceiling), ok("2.30"));
        assert_eq!(
            round("-0.001", RoundingMode::HalfEven),
            Err(MoneyError::Negative)
        );
        let yen = Amount::from_decimal_rounded(dec("99.5"), Currency::JPY, RoundingMode::HalfUp);
        assert_eq!(yen.map(|a| a.to_string()), ok("100"));
        // Rounding cannot carry past MINOR_MAX from a Decimal (that would need 29 digits), so
        // overflow here only comes from the size of the input.
        let max = Amount::from_decimal_rounded(Decimal::MAX, Currency::USD, RoundingMode::Floor);
        assert_eq!(max, Err(MoneyError::Overflow));
        let signed =
            SignedAmount::from_decimal_rounded(dec("-2.345"), Currency::USD, RoundingMode::Floor);
        assert_eq!(signed.map(|a| a.to_string()), ok("-2.35"));
    }

    #[test]
    fn checked_mul_rounds_once() {
        let fee = |a: &str, f: &str, mode| usd(a).checked_mul(dec(f), mode).map(|x| x.to_string());
        let ok = |s: &str| Ok(s.to_string());
        assert_eq!(fee("10.50", "0.015", RoundingMode::HalfEven), ok("0.16"));
        assert_eq!(fee("10.00", "0.0125", RoundingMode::HalfEven), ok("0.12"));
        assert_eq!(fee("10.00", "0.0125", RoundingMode::HalfUp), ok("0.13"));
        assert_eq!(fee("10.00", "0.0125", RoundingMode::HalfDown), ok("0.12"));
        assert_eq!(fee("10.00", "0.0101", RoundingMode::Ceiling), ok("0.11"));
        assert_eq!(fee("10.00", "0.0109", RoundingMode::Floor), ok("0.10"));
        assert_eq!(fee("10.00", "0", RoundingMode::Floor), ok("0.00"));
        assert_eq!(
            fee("10.00", "-0.01", RoundingMode::Floor),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            fee("10.00", "1000000000000000000000000000", RoundingMode::Floor),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            fee("1.00", "99999999999999999999999999.99", RoundingMode::Floor),
            ok("99999999999999999999999999.99")
        );
        let max = Amount::from_minor(Amount::MINOR_MAX, Currency::USD).expect("in range");
        assert_eq!(
            max.checked_mul(Decimal::MAX, RoundingMode::Floor),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul(Decimal::ONE, RoundingMode::Floor), Ok(max));
        // MINOR_MAX * (1 + 10^-28) = 10^28 - 10^-28 minor: Floor fits, Ceiling carries past the limit.
        let nudge = dec("1.0000000000000000000000000001");
        assert_eq!(max.checked_mul(nudge, RoundingMode::Floor), Ok(max));
        assert_eq!(
            max.checked_mul(nudge, RoundingMode::Ceiling),
            Err(MoneyError::Overflow)
        );
        let neg = SignedAmount::parse("-10.00", Currency::USD).expect("literal");
        let r = |mode| neg.checked_mul(dec("0.0125"), mode).map(|x| x.to_string());
        assert_eq!(r(RoundingMode::HalfUp), ok("-0.13"));
        assert_eq!(r(RoundingMode::Floor), ok("-0.13"));
        assert_eq!(r(RoundingMode::Ceiling), ok("-0.12"));
        assert_eq!(r(RoundingMode::TowardZero), ok("-0.12"));
    }

    #[test]
    fn checked_mul_keeps_the_whole_remainder_of_long_factors() {
        // Factors with more than 19 decimals are divided out in two steps; the remainder of
        // both steps decides the half-way modes.
        let cent = usd("0.01");
        let minor = |f: &str, mode| cent.checked_mul(dec(f), mode).map(|a| a.minor());
        assert_eq!(
            minor("0.5000000000000000000000000001", RoundingMode::HalfDown),
            Ok(1)
        );
        assert_eq!(
            minor("0.4999999999999999999999999999", RoundingMode::HalfUp),
            Ok(0)
        );
        assert_eq!(
            minor("0.5000000000000000000000000000", RoundingMode::HalfUp),
            Ok(1)
        );
        assert_eq!(
            minor("0.5000000000000000000000000000", RoundingMode::HalfDown),
            Ok(0)
        );
        assert_eq!(
            minor("0.5000000000000000000000000000", RoundingMode::HalfEven),
            Ok(0)
        );
        assert_eq!(
            minor("1.5000000000000000000000000000", RoundingMode::HalfEven),
            Ok(2)
        );
        assert_eq!(
            minor("0.0000000000000000000000000001", RoundingMode::Ceiling),
            Ok(1)
        );
        assert_eq!(
            minor("0.9999999999999999999999999999", RoundingMode::Floor),
            Ok(0)
        );
    }

    #[test]
    fn checked_mul_is_exact_where_decimal_multiplication_rounds() {
        // (10^27 - 1) minor * (1 + 10^-27) = 10^27 - 10^-27 minor: just below 10^27.
        // Decimal's own product needs 29 fractional digits and comes out as exactly 10^25.00,
        // so rounding that would give the wrong Floor. The exact product must be used.
        let a = Amount::from_minor(10i128.pow(27) - 1, Currency::USD).expect("in range");
        let factor = dec("1.000000000000000000000000001");
        let floor = a
            .checked_mul(factor, RoundingMode::Floor)
            .map(|x| x.minor());
        assert_eq!(floor, Ok(10i128.pow(27) - 1));
        let ceiling = a
            .checked_mul(factor, RoundingMode::Ceiling)
            .map(|x| x.minor());
        assert_eq!(ceiling, Ok(10i128.pow(27)));
    }

    #[test]
    fn amount_serde() {
        let json = serde_json::to_string(&usd("10.5")).expect("serializes");
        assert_eq!(json, r#"{"value":"10.50","currency":"USD"}"#);
        let de = |s: &str| serde_json::from_str::<Amount>(s);
        assert_eq!(
            de(r#"{"currency":"USD","value":"10.50"}"#).ok(),
            Some(usd("10.5"))
        );
        assert_eq!(
            de(r#"{"value":"10.5","currency":"USD"}"#).ok(),
            Some(usd("10.5"))
        );
        assert!(de(r#"{"value":"10.005","currency":"USD"}"#).is_err());
        assert!(de(r#"{"value":10.5,"currency":"USD"}"#).is_err());
        assert!(de(r#"{"value":"-1","currency":"USD"}"#).is_err());
        assert!(de(r#"{"value":"1","currency":"USD","memo":"x"}"#).is_err());
        assert!(de(r#"{"value":"1"}"#).is_err());
        assert!(de(r#"{"value":"1","currency":"XXX"}"#).is_err());
        let custom = Amount::parse("1.5", Currency::custom("USDC", 6).expect("valid")).expect("ok");
        let json = serde_json::to_string(&custom).expect("serializes");
        assert_eq!(json, r#"{"value":"1.500000","currency":"USDC:6"}"#);
        let signed = SignedAmount::parse("-3", Currency::JPY).expect("literal");
        let json = serde_json::to_string(&signed).expect("serializes");
        assert_eq!(json, r#"{"value":"-3","currency":"JPY"}"#);
        assert_eq!(
            serde_json::from_str::<SignedAmount>(&json).ok(),
            Some(signed)
        );
        assert_eq!(
            serde_json::to_string(&RoundingMode::HalfEven)
                .ok()
                .as_deref(),
            Some("\"half_even\"")
        );
        assert_eq!(
            serde_json::from_str::<RoundingMode>("\"away_from_zero\"").ok(),
            Some(RoundingMode::AwayFromZero)
        );
    }

    #[test]
    fn error_codes_are_stable() {
        let cases = [
            (MoneyError::InvalidFormat, "invalid_amount_format"),
            (
                MoneyError::TooManyDecimals {
                    allowed: 2,
                    found: 3,
                },
                "too_many_decimals",
            ),
            (MoneyError::Negative, "negative_amount"),
            (MoneyError::Overflow, "amount_overflow"),
            (
                MoneyError::CurrencyMismatch {
                    expected: Currency::USD,
                    found: Currency::EUR,
                },
                "currency_mismatch",
            ),
            (MoneyError::UnknownCurrency("X".into()), "unknown_currency"),
            (MoneyError::InvalidCurrency("X".into()), "invalid_currency"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(
            MoneyError::CurrencyMismatch {
                expected: Currency::USD,
                found: Currency::EUR
            }
            .to_string(),
            "currency mismatch: expected USD, found EUR"
        );
    }

    // ---- properties ----

    fn currency_strategy() -> impl Strategy<Value = Currency> {
        prop_oneof![
            proptest::sample::select(BUILTINS),
            (0..=Currency::MINOR_UNITS_MAX)
                .prop_map(|units| Currency::custom("TOK", units).expect("valid custom")),
        ]
    }

    fn minor_strategy() -> impl Strategy<Value = i128> {
        prop_oneof![
            Just(0),
            Just(Amount::MINOR_MAX),
            0..1_000_000i128,
            0..=Amount::MINOR_MAX,
        ]
    }

    fn amount_strategy() -> impl Strategy<Value = Amount> {
        (currency_strategy(), minor_strategy())
            .prop_map(|(c, m)| Amount::from_minor(m, c).expect("strategy stays in range"))
    }

    fn signed_strategy() -> impl Strategy<Value = SignedAmount> {
        (currency_strategy(), minor_strategy(), any::<bool>()).prop_map(|(c, m, neg)| {
            SignedAmount::from_minor(if neg { -m } else { m }, c).expect("in range")
        })
    }

    fn decimal_strategy() -> impl Strategy<Value = Decimal> {
        (0..(1i128 << 96), 0..=DECIMAL_SCALE_MAX)
            .prop_map(|(m, s)| Decimal::from_i128_with_scale(m, s))
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(a in amount_strategy()) {
            let shown = a.to_string();
            prop_assert_eq!(Amount::parse(&shown, a.currency()), Ok(a));
            prop_assert_eq!(&a.to_decimal().to_string(), &shown);
            prop_assert_eq!(Amount::from_decimal(a.to_decimal(), a.currency()), Ok(a));
        }

        #[test]
        fn signed_display_parse_round_trip(a in signed_strategy()) {
            let shown = a.to_string();
            prop_assert_eq!(SignedAmount::parse(&shown, a.currency()), Ok(a));
            prop_assert_eq!(&a.to_decimal().to_string(), &shown);
        }

        #[test]
        fn add_sub_agree_with_i128(c in currency_strategy(), x in minor_strategy(), y in minor_strategy()) {
            let (a, b) = (Amount::from_minor(x, c).expect("ok"), Amount::from_minor(y, c).expect("ok"));
            let sum = if x + y > Amount::MINOR_MAX { Err(MoneyError::Overflow) } else { Ok(x + y) };
            prop_assert_eq!(a.checked_add(b).map(|r| r.minor()), sum);
            let diff = if x < y { Err(MoneyError::Negative) } else { Ok(x - y) };
            prop_assert_eq!(a.checked_sub(b).map(|r| r.minor()), diff);
        }

        #[test]
        fn signed_add_sub_agree_with_i128(a in signed_strategy(), y in minor_strategy(), neg: bool) {
            let y = if neg { -y } else { y };
            let b = SignedAmount::from_minor(y, a.currency()).expect("ok");
            let in_range = |v: i128| if v.abs() > SignedAmount::MINOR_MAX { Err(MoneyError::Overflow) } else { Ok(v) };
            prop_assert_eq!(a.checked_add(b).map(|r| r.minor()), in_range(a.minor() + y));
            prop_assert_eq!(a.checked_sub(b).map(|r| r.minor()), in_range(a.minor() - y));
            prop_assert_eq!(a.checked_neg().map(|r| r.minor()), Ok(-a.minor()));
        }

        #[test]
        fn rounded_agrees_with_decimal(d in decimal_strategy(), c in currency_strategy(), mode_ix in 0..7usize) {
            let mode = MODES[mode_ix];
            let expected = d.round_dp_with_strategy(u32::from(c.minor_units()), mode.into());
            let got = Amount::from_decimal_rounded(d, c, mode);
            match Amount::from_decimal(expected, c) {
                Ok(exp) => prop_assert_eq!(got.map(|a| a.to_decimal()), Ok(exp.to_decimal())),
                Err(e) => {
                    prop_assert_eq!(&e, &MoneyError::Overflow);
                    prop_assert_eq!(got, Err(MoneyError::Overflow));
                }
            }
            let neg = SignedAmount::from_decimal_rounded(-d, c, mode);
            let expected_neg = (-d).round_dp_with_strategy(u32::from(c.minor_units()), mode.into());
            if let Ok(n) = neg {
                prop_assert_eq!(n.to_decimal(), expected_neg);
            }
        }

        #[test]
        fn mul_agrees_with_decimal_when_exact(
            c in currency_strategy(),
            minor in 0..1_000_000_000_000i128,
            mantissa in -1_000_000_000_000i64..1_000_000_000_000,
            scale in 0..=DECIMAL_SCALE_MAX,
            mode_ix in 0..7usize,
            negate: bool,
        ) {
            // Here the Decimal product is exact (< 10^24, scale <= 28), so it is a valid oracle.
            let mode = MODES[mode_ix];
            let scale = scale.min(DECIMAL_SCALE_MAX - u32::from(c.minor_units()));
            let factor = Decimal::new(mantissa, scale);
            let signed = SignedAmount::from_minor(if negate { -minor } else { minor }, c).expect("ok");
            let exact = signed.to_decimal().checked_mul(factor).expect("small product");
            let expected = exact.round_dp_with_strategy(u32::from(c.minor_units()), mode.into());
            let got = signed.checked_mul(factor, mode).map(|a| a.to_decimal());
            prop_assert_eq!(got, Ok(expected));
            let amount = Amount::from_minor(minor, c).expect("ok");
            let got = amount.checked_mul(factor, mode).map(|a| a.to_decimal());
            if factor < Decimal::ZERO {
                prop_assert_eq!(got, Err(MoneyError::Negative));
            } else {
                let exact = amount.to_decimal().checked_mul(factor).expect("small product");
                prop_assert_eq!(got, Ok(exact.round_dp_with_strategy(u32::from(c.minor_units()), mode.into())));
            }
        }

        #[test]
        fn mul_never_panics(a in signed_strategy(), m in any::<i128>(), s in 0..=DECIMAL_SCALE_MAX, mode_ix in 0..7usize) {
            let factor = Decimal::from_i128_with_scale(m % (1i128 << 96), s);
            let _ = a.checked_mul(factor, MODES[mode_ix]);
            let _ = a.abs_amount().checked_mul(factor, MODES[mode_ix]);
        }

        #[test]
        fn serde_round_trip(a in amount_strategy(), s in signed_strategy()) {
            let json = serde_json::to_string(&a).expect("serializes");
            prop_assert_eq!(serde_json::from_str::<Amount>(&json).ok(), Some(a));
            let json = serde_json::to_string(&s).expect("serializes");
            prop_assert_eq!(serde_json::from_str::<SignedAmount>(&json).ok(), Some(s));
            let json = serde_json::to_string(&a.currency()).expect("serializes");
            prop_assert_eq!(serde_json::from_str::<Currency>(&json).ok(), Some(a.currency()));
        }

        #[test]
        fn parse_never_panics(s in "\\PC*", c in currency_strategy()) {
            let _ = Amount::parse(&s, c);
            let _ = SignedAmount::parse(&s, c);
            let _ = s.parse::<Currency>();
        }

        #[test]
        fn parse_agrees_with_decimal(s in "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?", c in currency_strategy()) {
            // An independent oracle for the numeric value of well-formed input.
            let frac_len = s.split_once('.').map_or(0, |(_, f)| f.len());
            match SignedAmount::parse(&s, c) {
                Ok(a) => prop_assert_eq!(Some(a.to_decimal()), Decimal::from_str_exact(&s).ok()),
                Err(MoneyError::TooManyDecimals { allowed, found }) => {
                    prop_assert_eq!(found, frac_len);
                    prop_assert!(found > usize::from(allowed));
                }
                Err(e) => {
                    prop_assert_eq!(&e, &MoneyError::Overflow);
                    prop_assert!(frac_len <= usize::from(c.minor_units()));
                }
            }
        }
    }
}
