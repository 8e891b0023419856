//! Test utilities for the core, adapters and embedding applications (feature `test-util`):
//! the given/when/then harness ([`gwt`]), a seeded generator ([`rng`]) and workload
//! ([`workload`]), a naive reference ledger used as an auditor ([`oracle`]), a fault-injecting
//! store decorator ([`faulty`]), the store contract suite ([`contract`]), and a state
//! comparison used to prove that replaying the log rebuilds exactly the live state.

pub mod contract;
pub mod faulty;
pub mod gwt;
pub mod oracle;
pub mod rng;
pub mod workload;

use crate::ledger::Ledger;

/// Compares two ledgers on everything observable and on the balance indexes' change logs
/// (which determine every balance on both time axes). `Err` names the first difference.
pub fn same_state(a: &Ledger, b: &Ledger) -> Result<(), String> {
    if a.position() != b.position() {
        return Err(format!(
            "positions differ: {} vs {}",
            a.position(),
            b.position()
        ));
    }
    if a.accounts.len() != b.accounts.len() {
        return Err("account counts differ".into());
    }
    for (x, y) in a.accounts.iter().zip(&b.accounts) {
        if x.account != y.account {
            return Err(format!("account {} differs", x.account.id));
        }
        if x.position != y.position || x.bounds != y.bounds {
            return Err(format!("account {} bookkeeping differs", x.account.id));
        }
        if x.index.changes() != y.index.changes() {
            return Err(format!("balance index of {} differs", x.account.id));
        }
        if x.index.current().total() != y.index.current().total() {
            return Err(format!("current totals of {} differ", x.account.id));
        }
    }
    if a.positions != b.positions {
        return Err("log position records differ".into());
    }
    let indexed = |l: &Ledger| {
        l.entry_ix.len() == l.entries.len()
            && (l.entries.iter().enumerate())
                .all(|(i, e)| l.entry_ix.get(l.entry_id_str(e), l.keys()) == Some(i as u32))
    };
    if a.entries != b.entries || a.ids != b.ids || !indexed(a) || !indexed(b) {
        return Err("entries differ".into());
    }
    if a.rejected != b.rejected || a.rejected_at != b.rejected_at {
        return Err("rejected ids differ".into());
    }
    if a.corrections != b.corrections || a.resolutions != b.resolutions {
        return Err("corrections or hold resolutions differ".into());
    }
    if a.hold_deadlines != b.hold_deadlines {
        return Err("hold deadlines differ".into());
    }
    if a.open_fingerprints != b.open_fingerprints {
        return Err("account fingerprints differ".into());
    }
    Ok(())
}
