//! Handlers, one file per resource. Each one: parse (DTO → core command or query), look up the
//! attributes the policy needs, authorise, run the command on the engine or the query on a
//! consistent read, and map the answer. No ledger rule lives here: refusals come from the core.

pub mod accounts;
pub mod audit;
pub mod entries;
pub mod events;
pub mod ops;
pub mod transfers;

use ultracore_core::ids::{AccountId, EntryId};
use ultracore_core::ledger::{Command, Entry, Ledger, Outcome, Posting};

use crate::auth::policy::{AccountAttrs, Resource};
use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;

/// The policy attributes of `id` (none if the ledger does not know it).
pub fn account_attrs(ledger: &Ledger, id: &AccountId, debited: bool) -> AccountAttrs {
    let a = ledger.account(id);
    AccountAttrs {
        owner: a.and_then(|a| a.owner.clone()),
        branch: a.and_then(|a| a.branch.clone()),
        debited,
    }
}

/// The accounts of some postings, debited ones flagged.
pub fn postings_resource(ledger: &Ledger, postings: &[Posting]) -> Resource {
    Resource {
        accounts: postings
            .iter()
            .map(|p| {
                account_attrs(
                    ledger,
                    &p.account,
                    p.direction == ultracore_core::ledger::Direction::Debit,
                )
            })
            .collect(),
    }
}

/// The accounts an existing entry touches (current version, or the original for a cancelled
/// one); empty if the entry is unknown.
pub fn entry_resource(ledger: &Ledger, id: &EntryId) -> Resource {
    match ledger.entry_record(id) {
        None => Resource::default(),
        Some(e) => postings_resource(ledger, entry_postings(e)),
    }
}

/// The legs that identify an entry's accounts.
pub fn entry_postings(e: &Entry) -> &[Posting] {
    if e.current.postings.is_empty() {
        e.versions()
            .next()
            .map_or(&e.current.postings[..], |v| &v.postings[..])
    } else {
        &e.current.postings[..]
    }
}

/// Runs one command for `caller`; `path_id` names the resource in the URL (404 vs 422).
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    command: Command,
    path_id: Option<&str>,
) -> Result<Outcome, ApiError> {
    state
        .engine
        .execute(command, caller.trace())
        .await
        .map_err(|e| ApiError::engine(e, path_id))
}

/// The entry receipt of an outcome.
pub fn entry_receipt(o: Outcome) -> Result<crate::dto::ReceiptOut, ApiError> {
    match o {
        Outcome::Entry(r) => Ok((&r).into()),
        other => Err(ApiError::internal(format!(
            "expected an entry receipt, got {other:?}"
        ))),
    }
}
