//! A seeded generator of realistic command sequences for property tests: accounts in several
//! currencies (some constrained), transfers and multi-leg entries, back- and future-dated
//! entries, holds that are posted, voided or left to expire, reversals, corrections, freezes,
//! retries, conflicting reuse of ids, and plainly invalid commands.
//!
//! Drive it as `let cmd = w.next(&ledger, now); …; now += w.advance_micros();`. Everything is
//! a function of the seed and the ledger's (deterministic) state, so a failing run is
//! reproduced from its seed: report it with [`Workload::seed`].

use crate::ids::{AccountId, EntryId};
use crate::ledger::{
    AccountKind, AccountStatus, Command, Constraints, Correct, Direction, EntryKind, Ledger,
    Metadata, OpenAccount, PlaceHold, PostEntry, PostHold, Posting, Reverse, VoidHold,
};
use crate::money::{Amount, Currency};
use crate::time::{EffectiveAt, Timestamp};

use super::rng::Rng;

const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;

/// The kinds of command the workload issues, with their weights.
const WEIGHTS: [(Kind, u32); 17] = [
    (Kind::Open, 4),
    (Kind::Deposit, 16),
    (Kind::Transfer, 16),
    (Kind::MultiLeg, 5),
    (Kind::MultiCurrency, 2),
    (Kind::PlaceHold, 10),
    (Kind::PostHold, 6),
    (Kind::VoidHold, 3),
    (Kind::Reverse, 4),
    (Kind::Correct, 7),
    (Kind::Freeze, 2),
    (Kind::Unfreeze, 4),
    (Kind::Retry, 5),
    (Kind::Conflict, 2),
    (Kind::Invalid, 4),
    (Kind::Close, 1),
    (Kind::Metadata, 1),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    Deposit,
    Transfer,
    MultiLeg,
    MultiCurrency,
    PlaceHold,
    PostHold,
    VoidHold,
    Reverse,
    Correct,
    Freeze,
    Unfreeze,
    Retry,
    Conflict,
    Invalid,
    Close,
    Metadata,
}

/// A seeded command generator with a clock-advance policy.
#[derive(Clone, Debug)]
pub struct Workload {
    seed: u64,
    rng: Rng,
    currencies: Vec<Currency>,
    counter: u64,
    /// Every command issued, in order (for retries and conflicting reuse).
    history: Vec<Command>,
    /// Entry ids of posted entries, holds, in issue order.
    entries: Vec<EntryId>,
    holds: Vec<EntryId>,
    /// Set when the clock jumped far: expire holds next.
    expire_due: bool,
}

impl Workload {
    /// A workload for `seed`, using one to three of USD, EUR and JPY.
    pub fn new(seed: u64) -> Workload {
        let mut rng = Rng::new(seed);
        let all = [Currency::USD, Currency::EUR, Currency::JPY];
        let n = 1 + rng.below(3) as usize;
        Workload {
            seed,
            rng,
            currencies: all[..n].to_vec(),
            counter: 0,
            history: Vec::new(),
            entries: Vec::new(),
            holds: Vec::new(),
            expire_due: false,
        }
    }

    /// The seed (print it with every failure).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A reasonable start time for the clock.
    pub fn start() -> Timestamp {
        Timestamp::from_secs(1_767_225_600).unwrap_or(Timestamp::EPOCH) // 2026-01-01
    }

    /// Every command issued so far.
    pub fn history(&self) -> &[Command] {
        &self.history
    }

    /// How far to move the clock after a command, in microseconds: mostly seconds to minutes,
    /// sometimes hours, now and then days (after which the next command expires holds).
    pub fn advance_micros(&mut self) -> i64 {
        match self.rng.weighted(&[85, 12, 3]) {
            0 => self.rng.between(SECOND, 30 * 60 * SECOND),
            1 => self.rng.between(HOUR, 12 * HOUR),
            _ => {
                self.expire_due = true;
                self.rng.between(DAY, 3 * DAY)
            }
        }
    }

    /// The next command, chosen from the ledger's current state and the seed.
    pub fn next(&mut self, ledger: &Ledger, now: Timestamp) -> Command {
        let cmd = self.choose(ledger, now);
        self.history.push(cmd.clone());
        cmd
    }

    fn choose(&mut self, ledger: &Ledger, now: Timestamp) -> Command {
        if self.expire_due {
            self.expire_due = false;
            return Command::ExpireHolds;
        }
        if ledger.accounts().count() < 2 * self.currencies.len() + 2 {
            return self.open(ledger, now);
        }
        for _ in 0..8 {
            let weights: Vec<u32> = WEIGHTS.iter().map(|w| w.1).collect();
            let kind = WEIGHTS[self.rng.weighted(&weights)].0;
            if let Some(c) = self.make(kind, ledger, now) {
                return c;
            }
        }
        self.deposit(ledger, now)
            .unwrap_or_else(|| self.open(ledger, now))
    }

    fn make(&mut self, kind: Kind, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        match kind {
            Kind::Open => Some(self.open(ledger, now)),
            Kind::Deposit => self.deposit(ledger, now),
            Kind::Transfer => self.transfer(ledger, now),
            Kind::MultiLeg => self.multi_leg(ledger, now),
            Kind::MultiCurrency => self.multi_currency(ledger, now),
            Kind::PlaceHold => self.place_hold(ledger, now),
            Kind::PostHold => self.post_hold(ledger, now),
            Kind::VoidHold => self.void_hold(ledger, now),
            Kind::Reverse => self.reverse(ledger, now),
            Kind::Correct => self.correct(ledger, now),
            Kind::Freeze => self.status(ledger, AccountStatus::Open),
            Kind::Unfreeze => self.status(ledger, AccountStatus::Frozen),
            Kind::Retry => self.rng.pick(&self.history).cloned(),
            Kind::Conflict => self.conflict(),
            Kind::Invalid => self.invalid(ledger, now),
            Kind::Close => self
                .account(ledger, None)
                .map(|a| Command::CloseAccount { account: a.0 }),
            Kind::Metadata => self.metadata(ledger),
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    fn entry_id(&mut self, prefix: &str) -> EntryId {
        let s = self.fresh(prefix);
        EntryId::new(&s).unwrap_or_else(|_| panic!("seed {}: bad id {s}", self.seed))
    }

    /// A positive amount of `currency`, in a realistic range of minor units.
    fn amount(&mut self, currency: Currency) -> Amount {
        let scale = if currency.minor_units() == 0 { 1 } else { 100 };
        let major = match self.rng.weighted(&[60, 30, 10]) {
            0 => self.rng.between(1, 50),
            1 => self.rng.between(50, 500),
            _ => self.rng.between(500, 5_000),
        };
        let minor = i128::from(major) * scale + i128::from(self.rng.between(0, scale as i64 - 1));
        self.amount_minor(minor, currency)
    }

    fn amount_minor(&self, minor: i128, currency: Currency) -> Amount {
        Amount::from_minor(minor, currency)
            .unwrap_or_else(|e| panic!("seed {}: amount {minor}: {e}", self.seed))
    }

    /// A valid time: often "now" (None), often back-dated by up to 30 days, sometimes
    /// future-dated by up to 10 days.
    fn when(&mut self, now: Timestamp) -> Option<EffectiveAt> {
        let offset = match self.rng.weighted(&[36, 15, 22, 17, 10]) {
            0 => return None,
            // Midnight of one of the last ten days: bookings that share an instant.
            4 => {
                let midnight = now.as_micros().div_euclid(DAY) * DAY;
                midnight - self.rng.between(0, 9) * DAY - now.as_micros()
            }
            1 => -self.rng.between(0, 6 * HOUR),
            2 => -self.rng.between(HOUR, 30 * DAY),
            _ => self.rng.between(SECOND, 10 * DAY),
        };
        Some(EffectiveAt(now.saturating_add_micros(offset)))
    }

    fn open(&mut self, ledger: &Ledger, now: Timestamp) -> Command {
        let n = ledger.accounts().count();
        let currency = self.currencies[n % self.currencies.len()];
        let id = self.fresh("acc");
        // The first accounts of each currency are unconstrained treasuries funding the rest.
        let treasury = n < self.currencies.len();
        let (kind, constraints) = if treasury {
            (AccountKind::Asset, Constraints::default())
        } else {
            self.constraints(currency)
        };
        let back = if n < 2 * self.currencies.len() + 2 {
            90 * DAY
        } else if self.rng.chance(1, 5) {
            -self.rng.between(HOUR, 2 * DAY) // opens in the future
        } else {
            self.rng.between(0, 5 * DAY)
        };
        Command::OpenAccount(OpenAccount {
            id: AccountId::new(&id).unwrap_or_else(|_| panic!("seed {}: bad id", self.seed)),
            currency,
            kind,
            owner: self
                .rng
                .chance(1, 2)
                .then(|| format!("owner-{}", self.counter)),
            branch: None,
            constraints,
            metadata: Metadata::new(),
            effective_at: Some(EffectiveAt(now.saturating_add_micros(-back))),
        })
    }

    fn constraints(&mut self, currency: Currency) -> (AccountKind, Constraints) {
        let limit = |w: &mut Workload| {
            let minor = i128::from(w.rng.between(1, 20_000));
            w.rng.chance(1, 3).then(|| w.amount_minor(minor, currency))
        };
        match self.rng.weighted(&[50, 15, 15, 20]) {
            0 => {
                let c = Constraints {
                    debits_must_not_exceed_credits: true,
                    overdraft_limit: limit(self),
                    ..Constraints::default()
                };
                (AccountKind::Liability, c)
            }
            1 => {
                let c = Constraints {
                    credits_must_not_exceed_debits: true,
                    overdraft_limit: limit(self),
                    ..Constraints::default()
                };
                (AccountKind::Asset, c)
            }
            2 => {
                let c = Constraints {
                    overdraft_limit: Some(self.amount_minor(50_000, currency)),
                    ..Constraints::default()
                };
                (AccountKind::Income, c)
            }
            _ => (
                *self
                    .rng
                    .pick(&[
                        AccountKind::Expense,
                        AccountKind::Equity,
                        AccountKind::Liability,
                    ])
                    .unwrap_or(&AccountKind::Expense),
                Constraints::default(),
            ),
        }
    }

    /// A random account (of `currency`, if given), with its currency.
    fn account(
        &mut self,
        ledger: &Ledger,
        currency: Option<Currency>,
    ) -> Option<(AccountId, Currency)> {
        let all: Vec<(AccountId, Currency)> = ledger
            .accounts()
            .filter(|a| currency.is_none_or(|c| a.currency == c))
            .map(|a| (a.id.clone(), a.currency))
            .collect();
        self.rng.pick(&all).cloned()
    }

    /// The treasury (first account) of `currency`.
    fn treasury(ledger: &Ledger, currency: Currency) -> Option<AccountId> {
        ledger
            .accounts()
            .find(|a| a.currency == currency)
            .map(|a| a.id.clone())
    }

    fn two_accounts(&mut self, ledger: &Ledger) -> Option<(AccountId, AccountId, Currency)> {
        let (a, currency) = self.account(ledger, None)?;
        for _ in 0..4 {
            let (b, _) = self.account(ledger, Some(currency))?;
            if b != a {
                return Some((a, b, currency));
            }
        }
        None
    }

    fn post(&mut self, postings: Vec<Posting>, effective_at: Option<EffectiveAt>) -> Command {
        let id = self.entry_id("e");
        self.entries.push(id.clone());
        Command::PostEntry(PostEntry {
            id,
            postings: postings.into(),
            effective_at,
            metadata: Metadata::new(),
        })
    }

    fn deposit(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (to, currency) = self.account(ledger, None)?;
        let from = Self::treasury(ledger, currency)?;
        if from == to {
            return None;
        }
        let amount = self.amount(currency);
        let when = self.when(now);
        Some(self.post(transfer(from, to, amount), when))
    }

    fn transfer(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (from, to, currency) = self.two_accounts(ledger)?;
        let amount = self.amount(currency);
        let when = self.when(now);
        Some(self.post(transfer(from, to, amount), when))
    }

    /// One debit split over two or three credits (or the mirror image).
    fn multi_leg(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (one, currency) = self.account(ledger, None)?;
        let legs = 2 + self.rng.below(2) as usize;
        let mut postings = Vec::new();
        let mut total = 0;
        let side = if self.rng.chance(1, 2) {
            Direction::Credit
        } else {
            Direction::Debit
        };
        for _ in 0..legs {
            let (acc, _) = self.account(ledger, Some(currency))?;
            let amount = self.amount(currency);
            total += amount.minor();
            postings.push(posting(acc, side, amount));
        }
        let sum = self.amount_minor(total, currency);
        postings.push(posting(one, side.opposite(), sum));
        let when = self.when(now);
        Some(self.post(postings, when))
    }

    /// Two balanced pairs in two currencies in one entry.
    fn multi_currency(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (a, b, c1) = self.two_accounts(ledger)?;
        let (x, y, c2) = self.two_accounts(ledger)?;
        if c1 == c2 {
            return None;
        }
        let (m, n) = (self.amount(c1), self.amount(c2));
        let mut postings = transfer(a, b, m);
        postings.extend(transfer(x, y, n));
        let when = self.when(now);
        Some(self.post(postings, when))
    }

    fn place_hold(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (debit, credit, currency) = self.two_accounts(ledger)?;
        let id = self.entry_id("h");
        self.holds.push(id.clone());
        let effective_at = match self.rng.weighted(&[60, 30, 10]) {
            0 => None,
            1 => Some(EffectiveAt(
                now.saturating_add_micros(-self.rng.between(0, 2 * DAY)),
            )),
            _ => Some(EffectiveAt(
                now.saturating_add_micros(self.rng.between(1, HOUR)),
            )),
        };
        let expires_at = self
            .rng
            .chance(1, 2)
            .then(|| now.saturating_add_micros(self.rng.between(2 * HOUR, 3 * DAY)));
        let amount = self.amount(currency);
        Some(Command::PlaceHold(PlaceHold {
            id,
            debit_account: debit,
            credit_account: credit,
            amount,
            effective_at,
            expires_at,
            metadata: Metadata::new(),
        }))
    }

    /// An open hold (as far as the ledger knows), with its amount and valid time.
    fn open_hold(&mut self, ledger: &Ledger) -> Option<(EntryId, Amount, Timestamp)> {
        let open: Vec<(EntryId, Amount, Timestamp)> = self
            .holds
            .iter()
            .filter_map(|id| {
                let e = ledger.entry_view(id)?;
                match &e.kind {
                    EntryKind::Hold {
                        amount,
                        resolution: None,
                        ..
                    } => Some((id.clone(), *amount, e.current.effective_at.0)),
                    _ => None,
                }
            })
            .collect();
        self.rng.pick(&open).cloned()
    }

    /// A resolution time: usually now, sometimes between the hold's valid time and now.
    fn resolution_time(&mut self, placed: Timestamp, now: Timestamp) -> Option<EffectiveAt> {
        if placed >= now || self.rng.chance(2, 3) {
            return None;
        }
        let span = now.as_micros() - placed.as_micros();
        Some(EffectiveAt(
            placed.saturating_add_micros(self.rng.between(0, span)),
        ))
    }

    fn post_hold(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (hold, held, placed) = self.open_hold(ledger)?;
        let amount = match self.rng.weighted(&[50, 40, 10]) {
            0 => None,
            1 => {
                let part = 1 + i128::from(self.rng.below(held.minor() as u64));
                Some(self.amount_minor(part, held.currency()))
            }
            _ => Some(self.amount_minor(held.minor() + 1, held.currency())),
        };
        let effective_at = self.resolution_time(placed, now);
        Some(Command::PostHold(PostHold {
            hold,
            amount,
            effective_at,
        }))
    }

    fn void_hold(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (hold, _, placed) = self.open_hold(ledger)?;
        let effective_at = self.resolution_time(placed, now);
        Some(Command::VoidHold(VoidHold { hold, effective_at }))
    }

    /// A posted entry the ledger still holds as changeable (not reversed, not cancelled).
    fn live_entry(&mut self, ledger: &Ledger) -> Option<crate::ledger::Entry> {
        let live: Vec<&EntryId> = self
            .entries
            .iter()
            .filter(|id| {
                ledger.entry_view(id).is_some_and(|e| {
                    matches!(e.kind, EntryKind::Posted)
                        && e.reversed_by.is_none()
                        && !e.current.cancelled
                })
            })
            .collect();
        let id = self.rng.pick(&live)?;
        ledger.entry_record(id)
    }

    fn reverse(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let e = self.live_entry(ledger)?;
        let effective_at = match self.rng.weighted(&[60, 40]) {
            0 => None,
            _ => Some(EffectiveAt(e.current.effective_at.0.max(now))),
        };
        let entry = e.id.clone();
        let id = self.entry_id("r");
        Some(Command::Reverse(Reverse {
            id,
            entry,
            effective_at,
            metadata: Metadata::new(),
        }))
    }

    fn correct(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let e = self.live_entry(ledger)?;
        let (entry, postings) = (e.id.clone(), e.current.postings.clone());
        let mut c = Correct {
            id: self.entry_id("c"),
            entry,
            amount: None,
            postings: None,
            effective_at: None,
            cancel: false,
            reason: "workload correction".to_string(),
        };
        match self.rng.weighted(&[40, 35, 25, 15]) {
            0 if postings.len() == 2 => c.amount = Some(self.amount(postings[0].amount.currency())),
            3 => {
                // Redirect the last leg to another account of its currency, maybe re-dated.
                let mut moved = postings.to_vec();
                let last = moved.last_mut()?;
                last.account = self.account(ledger, Some(last.amount.currency()))?.0;
                c.postings = Some(moved);
                c.effective_at = self.when(now);
            }
            0 => {
                let doubled = postings.iter().map(|p| {
                    let a = self.amount_minor(p.amount.minor() * 2, p.amount.currency());
                    posting(p.account.clone(), p.direction, a)
                });
                c.postings = Some(doubled.collect());
            }
            1 => c.effective_at = Some(self.when(now).unwrap_or(EffectiveAt(now))),
            _ => c.cancel = true,
        }
        Some(Command::Correct(c))
    }

    /// Freezes an open account (`from` = Open) or unfreezes a frozen one.
    fn status(&mut self, ledger: &Ledger, from: AccountStatus) -> Option<Command> {
        let ids: Vec<AccountId> = ledger
            .accounts()
            .filter(|a| a.status == from)
            .map(|a| a.id.clone())
            .collect();
        let account = self.rng.pick(&ids)?.clone();
        Some(match from {
            AccountStatus::Open => Command::FreezeAccount { account },
            _ => Command::UnfreezeAccount { account },
        })
    }

    fn metadata(&mut self, ledger: &Ledger) -> Option<Command> {
        let (account, _) = self.account(ledger, None)?;
        let mut map = std::collections::BTreeMap::new();
        map.insert("tier".to_string(), format!("t{}", self.rng.below(3)));
        let metadata = Metadata::from_map(map).ok()?;
        Some(Command::SetAccountMetadata { account, metadata })
    }

    /// An earlier entry command's id reused with different content.
    fn conflict(&mut self) -> Option<Command> {
        let earlier: Vec<&Command> = self
            .history
            .iter()
            .filter(|c| c.entry_id().is_some())
            .collect();
        let mut c = (*self.rng.pick(&earlier)?).clone();
        let bump = |a: &mut Amount| {
            *a = Amount::from_minor(a.minor() + 1, a.currency()).unwrap_or(*a);
        };
        match &mut c {
            Command::PostEntry(p) => {
                let mut postings = p.postings.to_vec();
                postings.iter_mut().for_each(|p| bump(&mut p.amount));
                p.postings = postings.into();
            }
            Command::PlaceHold(h) => bump(&mut h.amount),
            Command::Reverse(r) => {
                r.metadata = Metadata::from_map([("x".into(), "y".into())].into()).ok()?
            }
            Command::Correct(k) => k.reason.push_str(" (again)"),
            _ => return None,
        }
        Some(c)
    }

    fn invalid(&mut self, ledger: &Ledger, now: Timestamp) -> Option<Command> {
        let (from, to, currency) = self.two_accounts(ledger)?;
        let amount = self.amount(currency);
        let mut postings = transfer(from.clone(), to, amount);
        let mut when = self.when(now);
        match self.rng.below(5) {
            0 => postings[1].account = AccountId::new(&self.fresh("ghost")).ok()?,
            1 => {
                let other = *self.rng.pick(&[Currency::GBP, Currency::CHF])?;
                postings[0].amount = self.amount_minor(amount.minor(), other);
                postings[1].amount = postings[0].amount;
            }
            2 => postings[1].amount = self.amount_minor(amount.minor() + 1, currency),
            3 => when = Some(EffectiveAt(now.saturating_add_micros(-500 * DAY))),
            _ => postings.truncate(1),
        }
        Some(self.post(postings, when))
    }
}

fn posting(account: AccountId, direction: Direction, amount: Amount) -> Posting {
    Posting {
        account,
        direction,
        amount,
    }
}

/// Debit `from`, credit `to`.
fn transfer(from: AccountId, to: AccountId, amount: Amount) -> Vec<Posting> {
    vec![
        posting(from, Direction::Debit, amount),
        posting(to, Direction::Credit, amount),
    ]
}
