//! Fuzz target: amount and currency parsing never panic, and what parses prints back to itself.
//!
//! Arbitrary UTF-8 is parsed as an `Amount` and a `SignedAmount` in currencies with 0, 2, 3 and
//! 18 minor units, and as a currency (`FromStr`, `from_code`, `custom`). Whenever parsing
//! succeeds, `Display` must parse back to an equal value. Run with `cargo fuzz run amount_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_core::money::{Amount, Currency, SignedAmount};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_amounts(text);
    check_currency(text, data.first().copied().unwrap_or(0));
});

fn check_amounts(text: &str) {
    let token = Currency::custom("TOKEN", Currency::MINOR_UNITS_MAX)
        .expect("TOKEN:18 is a valid custom currency");
    for currency in [Currency::JPY, Currency::USD, Currency::KWD, token] {
        if let Ok(amount) = Amount::parse(text, currency) {
            let shown = amount.to_string();
            assert_eq!(
                Amount::parse(&shown, currency),
                Ok(amount),
                "{text:?} -> {shown:?}"
            );
            assert_eq!(
                Amount::from_decimal(amount.to_decimal(), currency),
                Ok(amount)
            );
            // The strict grammar admits exactly one spelling per value once padded.
            assert!(shown.len() >= text.len(), "{text:?} -> {shown:?}");
        }
        if let Ok(signed) = SignedAmount::parse(text, currency) {
            let shown = signed.to_string();
            assert_eq!(
                SignedAmount::parse(&shown, currency),
                Ok(signed),
                "{text:?} -> {shown:?}"
            );
        }
    }
}

fn check_currency(text: &str, minor_units: u8) {
    if let Ok(currency) = text.parse::<Currency>() {
        // `{:#}` is the FromStr form ("USD", "USDC:6"); plain Display is the code alone.
        let spec = format!("{currency:#}");
        assert_eq!(
            spec.parse::<Currency>(),
            Ok(currency),
            "{text:?} -> {spec:?}"
        );
        if currency.is_builtin() {
            assert_eq!(currency.to_string().parse::<Currency>(), Ok(currency));
        }
    }
    if let Ok(currency) = Currency::from_code(text) {
        assert_eq!(Currency::from_code(&currency.to_string()), Ok(currency));
    }
    if let Ok(currency) = Currency::custom(text, minor_units) {
        assert_eq!(currency.code(), text);
        assert_eq!(currency.minor_units(), minor_units);
        assert_eq!(format!("{currency:#}").parse::<Currency>(), Ok(currency));
    }
}
