//! Step-up authentication: which sensitive actions need a token whose `amr` claim
//! (authentication methods, RFC 8176) contains `"mfa"`. Like the policy table it is data plus
//! one pure function, evaluated after the policy allowed the action; a refusal is
//! `403 mfa_required`, audited with decision `mfa_required`.

use rust_decimal::Decimal;
use ultracore_core::ledger::{Command, Direction};

/// The `amr` value that proves multi-factor authentication.
pub const MFA_AMR: &str = "mfa";

/// The names accepted in `mfa_required_for`.
pub const MFA_ACTIONS: &[&str] = &["account_close", "correction", "reversal", "transfer"];

/// Which sensitive actions need MFA. The default requires it for nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MfaPolicy {
    /// `POST /v1/accounts/{id}/close`.
    pub account_close: bool,
    /// `POST /v1/entries/{id}/corrections`.
    pub correction: bool,
    /// `POST /v1/entries/{id}/reversal`.
    pub reversal: bool,
    /// Money moves (transfers, holds, multi-leg entries, batch items) that move more than this
    /// amount, in the units of their own currency.
    pub transfer_above: Option<Decimal>,
}

/// A sensitive action, as the handler sees it.
#[derive(Clone, Copy, Debug)]
pub enum Sensitive<'a> {
    /// Closing an account.
    AccountClose,
    /// Correcting an entry.
    Correction,
    /// Reversing an entry.
    Reversal,
    /// A command that moves money.
    MoneyMove(&'a Command),
}

impl MfaPolicy {
    /// From the configured list (names of [`MFA_ACTIONS`], or `none`) and the transfer
    /// threshold (a decimal, used when `transfer` is listed).
    pub fn parse(required_for: &[String], transfer_threshold: &str) -> Result<MfaPolicy, String> {
        let mut p = MfaPolicy::default();
        for name in required_for
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            match name {
                "none" => {}
                "account_close" => p.account_close = true,
                "correction" => p.correction = true,
                "reversal" => p.reversal = true,
                "transfer" => {
                    let t: Decimal = transfer_threshold.trim().parse().map_err(|e| {
                        format!("mfa_transfer_threshold {transfer_threshold:?}: {e}")
                    })?;
                    if t.is_sign_negative() {
                        return Err("mfa_transfer_threshold must not be negative".into());
                    }
                    p.transfer_above = Some(t);
                }
                other => {
                    return Err(format!(
                        "unknown action {other:?} (known: {}, or none)",
                        MFA_ACTIONS.join(", ")
                    ))
                }
            }
        }
        Ok(p)
    }

    /// Whether `what` needs an MFA token.
    pub fn requires(&self, what: Sensitive<'_>) -> bool {
        match what {
            Sensitive::AccountClose => self.account_close,
            Sensitive::Correction => self.correction,
            Sensitive::Reversal => self.reversal,
            Sensitive::MoneyMove(cmd) => match (self.transfer_above, moved(cmd)) {
                (Some(limit), Some(amount)) => amount > limit,
                _ => false,
            },
        }
    }
}

/// How much a money-moving command moves: a hold's amount, or an entry's largest total of
/// debits in one currency.
fn moved(cmd: &Command) -> Option<Decimal> {
    match cmd {
        Command::PlaceHold(h) => Some(h.amount.to_decimal()),
        Command::PostEntry(e) => {
            let mut totals: Vec<(ultracore_core::money::Currency, Decimal)> = Vec::new();
            for p in e
                .postings
                .iter()
                .filter(|p| p.direction == Direction::Debit)
            {
                let (c, d) = (p.amount.currency(), p.amount.to_decimal());
                match totals.iter_mut().find(|(tc, _)| *tc == c) {
                    // Saturating: an amount this large needs MFA whatever the threshold.
                    Some((_, t)) => *t = t.checked_add(d).unwrap_or(Decimal::MAX),
                    None => totals.push((c, d)),
                }
            }
            totals.into_iter().map(|(_, t)| t).max()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ultracore_core::ledger::PostEntry;
    use ultracore_core::money::{Amount, Currency};

    fn transfer(amount: &str) -> Command {
        Command::PostEntry(PostEntry::transfer(
            "t".parse().unwrap(),
            "a".parse().unwrap(),
            "b".parse().unwrap(),
            Amount::parse(amount, Currency::USD).unwrap(),
            None,
        ))
    }

    #[test]
    fn the_default_requires_nothing_and_the_list_is_checked() {
        let off = MfaPolicy::default();
        assert!(!off.requires(Sensitive::AccountClose));
        assert!(!off.requires(Sensitive::MoneyMove(&transfer("1000000.00"))));
        assert_eq!(MfaPolicy::parse(&["none".into()], "1").unwrap(), off);
        assert!(MfaPolicy::parse(&["close".into()], "1").is_err());
        assert!(MfaPolicy::parse(&["transfer".into()], "ten").is_err());
        assert!(MfaPolicy::parse(&["transfer".into()], "-1").is_err());
    }

    #[test]
    fn transfers_strictly_above_the_threshold() {
        let names: Vec<String> = MFA_ACTIONS.iter().map(|s| s.to_string()).collect();
        let p = MfaPolicy::parse(&names, "1000").unwrap();
        assert!(p.requires(Sensitive::AccountClose));
        assert!(p.requires(Sensitive::Correction));
        assert!(p.requires(Sensitive::Reversal));
        assert!(!p.requires(Sensitive::MoneyMove(&transfer("1000.00"))));
        assert!(p.requires(Sensitive::MoneyMove(&transfer("1000.01"))));
        assert!(!p.requires(Sensitive::MoneyMove(&Command::ExpireHolds)));
    }
}
