//! Who is asking and may they: JWT verification (`jwt`), the policy table (`policy`), step-up
//! authentication for sensitive actions (`mfa`), the per-principal rate limit (`rate`), and the
//! hash-chained audit log (`audit`).

pub mod audit;
pub mod jwks;
pub mod jwt;
pub mod mfa;
pub mod policy;
pub mod rate;

use serde::{Deserialize, Serialize};

/// The roles a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Accounts of their `branch` claim.
    Teller,
    /// Accounts whose owner is their `customer` claim: read, and transfers out of them.
    Customer,
    /// Reads everything, writes nothing.
    Auditor,
    /// Reads everything; freezes and unfreezes accounts.
    ComplianceOfficer,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Teller => "teller",
            Role::Customer => "customer",
            Role::Auditor => "auditor",
            Role::ComplianceOfficer => "compliance_officer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            format!("unknown role {s:?} (admin, teller, customer, auditor, compliance_officer)")
        })
    }
}

/// An authenticated caller, from a verified token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Subject (`sub`).
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Branch claim (tellers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Customer claim (customers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Whether the token's `amr` claim says it was issued after multi-factor authentication.
    #[serde(default)]
    pub mfa: bool,
}
