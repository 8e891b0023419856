//! TEMPORARY naive stand-in.
#![allow(missing_docs)]
use std::collections::BTreeMap;
pub type TimelineKey = (i64, u64);
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Deltas {
    pub posted: i128,
    pub pending_debit: i128,
    pub pending_credit: i128,
}
impl Deltas {
    pub const ZERO: Deltas = Deltas {
        posted: 0,
        pending_debit: 0,
        pending_credit: 0,
    };
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
    pub fn checked_add(&self, o: &Deltas) -> Option<Deltas> {
        Some(Deltas {
            posted: self.posted.checked_add(o.posted)?,
            pending_debit: self.pending_debit.checked_add(o.pending_debit)?,
            pending_credit: self.pending_credit.checked_add(o.pending_credit)?,
        })
    }
    pub fn lower_series(&self) -> i128 {
        self.posted - self.pending_debit
    }
    pub fn upper_series(&self) -> i128 {
        self.posted + self.pending_credit
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineError {
    Overflow,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    Lower,
    Upper,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub at: TimelineKey,
    pub value: i128,
    pub bound: i128,
    pub kind: BoundKind,
}
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    m: BTreeMap<TimelineKey, Deltas>,
}
impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, key: TimelineKey, d: Deltas) -> Result<(), TimelineError> {
        let v = self.m.entry(key).or_default();
        *v = v.checked_add(&d).ok_or(TimelineError::Overflow)?;
        if v.is_zero() {
            self.m.remove(&key);
        }
        Ok(())
    }
    pub fn prefix(&self, at: i64) -> Deltas {
        self.m
            .range(..=(at, u64::MAX))
            .fold(Deltas::ZERO, |a, (_, d)| a.checked_add(d).unwrap())
    }
    pub fn total(&self) -> Deltas {
        self.prefix(i64::MAX)
    }
    pub fn check(
        &self,
        changes: &[(TimelineKey, Deltas)],
        lower: Option<i128>,
        upper: Option<i128>,
    ) -> Result<(), Violation> {
        let mut c = self.clone();
        for (k, d) in changes {
            c.add(*k, *d).unwrap();
        }
        let min = changes.iter().map(|c| c.0).min().unwrap_or((i64::MAX, 0));
        let mut run = Deltas::ZERO;
        for (k, d) in &c.m {
            run = run.checked_add(d).unwrap();
            if *k < min {
                continue;
            }
            if let Some(l) = lower {
                if run.lower_series() < l {
                    return Err(Violation {
                        at: *k,
                        value: run.lower_series(),
                        bound: l,
                        kind: BoundKind::Lower,
                    });
                }
            }
            if let Some(u) = upper {
                if run.upper_series() > u {
                    return Err(Violation {
                        at: *k,
                        value: run.upper_series(),
                        bound: u,
                        kind: BoundKind::Upper,
                    });
                }
            }
        }
        Ok(())
    }
    pub fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (TimelineKey, Deltas)> + '_ {
        self.m
            .range((from, 0)..=(to, u64::MAX))
            .map(|(k, d)| (*k, *d))
    }
}
