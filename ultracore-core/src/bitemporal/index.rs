//! TEMPORARY naive stand-in.
#![allow(missing_docs)]
use super::timeline::*;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub position: u64,
    pub key: TimelineKey,
    pub deltas: Deltas,
}
#[derive(Debug, Clone, Default)]
pub struct BitemporalIndex {
    cur: Timeline,
    changes: Vec<Change>,
}
impl BitemporalIndex {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn apply(
        &mut self,
        position: u64,
        key: TimelineKey,
        d: Deltas,
    ) -> Result<(), TimelineError> {
        self.cur.add(key, d)?;
        self.changes.push(Change {
            position,
            key,
            deltas: d,
        });
        Ok(())
    }
    pub fn current(&self) -> &Timeline {
        &self.cur
    }
    pub fn balance(&self, valid_at: i64, known_at: Option<u64>) -> Deltas {
        self.changes
            .iter()
            .filter(|c| known_at.is_none_or(|k| c.position <= k) && c.key.0 <= valid_at)
            .fold(Deltas::ZERO, |a, c| a.checked_add(&c.deltas).unwrap())
    }
    pub fn entries(&self, from: i64, to: i64, known_at: Option<u64>) -> Vec<(TimelineKey, Deltas)> {
        let mut t = Timeline::new();
        for c in self
            .changes
            .iter()
            .filter(|c| known_at.is_none_or(|k| c.position <= k))
        {
            t.add(c.key, c.deltas).unwrap();
        }
        t.range(from, to).collect()
    }
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }
    pub fn check(
        &self,
        changes: &[(TimelineKey, Deltas)],
        lower: Option<i128>,
        upper: Option<i128>,
    ) -> Result<(), Violation> {
        self.cur.check(changes, lower, upper)
    }
    pub fn memory_bytes(&self) -> usize {
        self.changes.len() * 64
    }
}
