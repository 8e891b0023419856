//! Authorisation as data: [`RULES`] is a table of (role, actions, scope) rows and
//! [`authorize`] is the one function that evaluates it. Deny by default: a request is allowed
//! only if some row names the principal's role and the action, and the row's scope holds for
//! every account the action touches.
//!
//! The handler looks up the attributes of the accounts involved (owner, branch) before asking,
//! so rules never reach into the ledger themselves. An account the ledger does not know has no
//! owner and no branch: customers and tellers are refused (403) rather than told it does not
//! exist, so ids cannot be probed.

use serde::Serialize;

use super::{Principal, Role};

/// What a request does. One per endpoint family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `POST /v1/accounts`.
    AccountCreate,
    /// `GET /v1/accounts/{id}`, balance, statement, restatement.
    AccountRead,
    /// `POST /v1/accounts/{id}/freeze` and `/unfreeze`.
    AccountFreeze,
    /// `POST /v1/accounts/{id}/close`.
    AccountClose,
    /// `POST /v1/transfers` (also each item of a batch), `POST /v1/entries`.
    MoneyMove,
    /// `POST /v1/transfers/{id}/post` and `/void`.
    HoldResolve,
    /// `POST /v1/entries/{id}/corrections` and `/reversal`.
    EntryAmend,
    /// `GET /v1/entries/{id}` and its history.
    EntryRead,
    /// `GET /v1/events`.
    EventsRead,
    /// `GET /v1/audit`.
    AuditRead,
}

impl Action {
    /// The wire name (audit records).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AccountCreate => "account_create",
            Action::AccountRead => "account_read",
            Action::AccountFreeze => "account_freeze",
            Action::AccountClose => "account_close",
            Action::MoneyMove => "money_move",
            Action::HoldResolve => "hold_resolve",
            Action::EntryAmend => "entry_amend",
            Action::EntryRead => "entry_read",
            Action::EventsRead => "events_read",
            Action::AuditRead => "audit_read",
        }
    }
}

/// The attributes of one account a request touches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountAttrs {
    /// Owning customer (None if unknown or unowned).
    pub owner: Option<String>,
    /// Servicing branch (None if unknown or none).
    pub branch: Option<String>,
    /// Whether the request takes money out of it (debits it).
    pub debited: bool,
}

/// What a request acts on: the accounts it touches (empty for log-wide reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// Accounts involved.
    pub accounts: Vec<AccountAttrs>,
}

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Anything.
    Any,
    /// Every account touched is of the principal's branch.
    AllInBranch,
    /// Every debited account is of the principal's branch (at least one is debited).
    DebitsInBranch,
    /// At least one account touched is of the principal's branch.
    AnyInBranch,
    /// Every account touched is owned by the principal's customer.
    AllOwned,
    /// Every debited account is owned by the principal's customer (at least one is debited).
    DebitsOwned,
    /// At least one account touched is owned by the principal's customer.
    AnyOwned,
}

/// One row of the policy.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Who.
    pub role: Role,
    /// What.
    pub actions: &'static [Action],
    /// On what.
    pub scope: Scope,
}

use Action::*;

const ALL: &[Action] = &[
    AccountCreate,
    AccountRead,
    AccountFreeze,
    AccountClose,
    MoneyMove,
    HoldResolve,
    EntryAmend,
    EntryRead,
    EventsRead,
    AuditRead,
];

/// The policy. Read it as "role may do actions where scope holds".
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { role: Role::Admin, actions: ALL, scope: Scope::Any },
    Rule {
        role: Role::Auditor,
        actions: &[AccountRead, EntryRead, EventsRead, AuditRead],
        scope: Scope::Any,
    },
    Rule {
        role: Role::ComplianceOfficer,
        actions: &[AccountRead, EntryRead, EventsRead, AccountFreeze],
        scope: Scope::Any,
    },
    Rule {
        role: Role::Teller,
        actions: &[AccountCreate, AccountRead, AccountFreeze, AccountClose, EntryAmend],
        scope: Scope::AllInBranch,
    },
    Rule { role: Role::Teller, actions: &[MoneyMove, HoldResolve], scope: Scope::DebitsInBranch },
    Rule { role: Role::Teller, actions: &[EntryRead], scope: Scope::AnyInBranch },
    Rule { role: Role::Customer, actions: &[AccountRead], scope: Scope::AllOwned },
    Rule { role: Role::Customer, actions: &[MoneyMove], scope: Scope::DebitsOwned },
    Rule { role: Role::Customer, actions: &[EntryRead], scope: Scope::AnyOwned },
];

/// The answer of [`authorize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the rule at this index of [`RULES`].
    Allow(usize),
    /// No rule allows it.
    Deny,
}

impl Decision {
    /// Whether it is an allow.
    pub fn allowed(self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Evaluates [`RULES`] for `principal` doing `action` on `resource`.
pub fn authorize(principal: &Principal, action: Action, resource: &Resource) -> Decision {
    RULES
        .iter()
        .position(|r| {
            r.role == principal.role
                && r.actions.contains(&action)
                && scope_holds(r.scope, principal, resource)
        })
        .map_or(Decision::Deny, Decision::Allow)
}

fn scope_holds(scope: Scope, p: &Principal, res: &Resource) -> bool {
    let branch = |a: &AccountAttrs| p.branch.is_some() && a.branch == p.branch;
    let owned = |a: &AccountAttrs| p.customer.is_some() && a.owner == p.customer;
    let debited = || res.accounts.iter().filter(|a| a.debited);
    let nonempty = !res.accounts.is_empty();
    match scope {
        Scope::Any => true,
        Scope::AllInBranch => nonempty && res.accounts.iter().all(branch),
        Scope::DebitsInBranch => debited().next().is_some() && debited().all(branch),
        Scope::AnyInBranch => res.accounts.iter().any(branch),
        Scope::AllOwned => nonempty && res.accounts.iter().all(owned),
        Scope::DebitsOwned => debited().next().is_some() && debited().all(owned),
        Scope::AnyOwned => res.accounts.iter().any(owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, branch: Option<&str>, customer: Option<&str>) -> Principal {
        Principal {
            sub: "s".into(),
            role,
            branch: branch.map(str::to_string),
            customer: customer.map(str::to_string),
            mfa: false,
        }
    }

    fn acct(owner: Option<&str>, branch: Option<&str>, debited: bool) -> AccountAttrs {
        AccountAttrs {
            owner: owner.map(str::to_string),
            branch: branch.map(str::to_string),
            debited,
        }
    }

    fn res(accounts: Vec<AccountAttrs>) -> Resource {
        Resource { accounts }
    }

    /// One table of cases through one check: (principal, action, resource, allowed).
    #[test]
    fn policy_table() {
        let ana = p(Role::Customer, None, Some("ana"));
        let teller_n = p(Role::Teller, Some("north"), None);
        let auditor = p(Role::Auditor, None, None);
        let co = p(Role::ComplianceOfficer, None, None);
        let admin = p(Role::Admin, None, None);
        let bare_teller = p(Role::Teller, None, None);
        let bare_customer = p(Role::Customer, None, None);
        let ana_acct = acct(Some("ana"), Some("north"), false);
        let bob_acct = acct(Some("bob"), Some("south"), false);
        let out_of_ana = res(vec![
            acct(Some("ana"), Some("north"), true),
            bob_acct.clone(),
        ]);
        let out_of_bob = res(vec![
            acct(Some("bob"), Some("south"), true),
            ana_acct.clone(),
        ]);
        let cases: Vec<(&Principal, Action, Resource, bool)> = vec![
            (&ana, AccountRead, res(vec![ana_acct.clone()]), true),
            (&ana, AccountRead, res(vec![bob_acct.clone()]), false),
            (&ana, AccountRead, res(vec![]), false),
            (&ana, MoneyMove, out_of_ana.clone(), true),
            (&ana, MoneyMove, out_of_bob.clone(), false),
            (&ana, AccountFreeze, res(vec![ana_acct.clone()]), false),
            (&ana, EventsRead, res(vec![]), false),
            (&ana, EntryRead, out_of_bob.clone(), true),
            (&teller_n, AccountRead, res(vec![ana_acct.clone()]), true),
            (&teller_n, AccountRead, res(vec![bob_acct.clone()]), false),
            (&teller_n, MoneyMove, out_of_ana.clone(), true),
            (&teller_n, MoneyMove, out_of_bob.clone(), false),
            (&teller_n, EntryAmend, out_of_ana.clone(), false),
            (&teller_n, AuditRead, res(vec![]), false),
            (&auditor, AccountRead, res(vec![bob_acct.clone()]), true),
            (&auditor, AuditRead, res(vec![]), true),
            (&auditor, MoneyMove, out_of_ana.clone(), false),
            (&auditor, AccountFreeze, res(vec![ana_acct.clone()]), false),
            (&co, AccountFreeze, res(vec![bob_acct.clone()]), true),
            (&co, AuditRead, res(vec![]), false),
            (&co, MoneyMove, out_of_ana.clone(), false),
            (&admin, AuditRead, res(vec![]), true),
            (&admin, EntryAmend, out_of_bob.clone(), true),
            // A claim-less teller or customer matches nothing, not "None == None".
            (
                &bare_teller,
                AccountRead,
                res(vec![acct(None, None, false)]),
                false,
            ),
            (
                &bare_customer,
                AccountRead,
                res(vec![acct(None, None, false)]),
                false,
            ),
        ];
        for (i, (who, action, resource, want)) in cases.iter().enumerate() {
            let got = authorize(who, *action, resource).allowed();
            assert_eq!(
                got, *want,
                "case {i}: {:?} {action:?} {resource:?}",
                who.role
            );
        }
    }
}
