//! HS256 tokens: minting (`ultracore token`) and verification (every protected request).
//! Expiry is required and enforced with a small leeway; the algorithm is pinned, so a token
//! signed with another algorithm (or `none`) is refused.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Principal, Role};
use crate::error::ApiError;

/// Claims of an UltraCore token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Branch (tellers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Customer (customers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

/// Signing and verification keys.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)") // never print the secret
    }
}

impl JwtKeys {
    /// HS256 keys from a shared secret; `leeway_seconds` of clock skew are tolerated.
    pub fn hs256(secret: &[u8], leeway_seconds: u64) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_seconds;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `principal` valid from `now` for `ttl_seconds`.
    pub fn mint(&self, principal: &Principal, now: u64, ttl_seconds: u64) -> String {
        let claims = Claims {
            sub: principal.sub.clone(),
            role: principal.role,
            branch: principal.branch.clone(),
            customer: principal.customer.clone(),
            iat: now,
            exp: now.saturating_add(ttl_seconds),
        };
        // Encoding HS256 claims of plain strings cannot fail.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims")
    }

    /// Verifies a token and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => ApiError::new(
                        axum::http::StatusCode::UNAUTHORIZED,
                        "token_expired",
                        "the token has expired",
                    ),
                    _ => ApiError::unauthenticated("invalid token"),
                }
            })?;
        let c = data.claims;
        Ok(Principal {
            sub: c.sub,
            role: c.role,
            branch: c.branch,
            customer: c.customer,
        })
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(value: Option<&str>) -> Result<&str, ApiError> {
    let v = value.ok_or_else(|| ApiError::unauthenticated("missing Authorization header"))?;
    let (scheme, token) = v
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthenticated("expected Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthenticated(
            "expected Authorization: Bearer <token>",
        ));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::unix_seconds;

    fn teller() -> Principal {
        Principal {
            sub: "t1".into(),
            role: Role::Teller,
            branch: Some("north".into()),
            customer: None,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let keys = JwtKeys::hs256(&[7u8; 32], 5);
        let now = unix_seconds();
        let t = keys.mint(&teller(), now, 60);
        assert_eq!(keys.verify(&t).unwrap(), teller());

        let expired = keys.mint(&teller(), now - 3600, 60);
        assert_eq!(keys.verify(&expired).unwrap_err().code, "token_expired");

        let other = JwtKeys::hs256(&[8u8; 32], 5).mint(&teller(), now, 60);
        assert_eq!(keys.verify(&other).unwrap_err().code, "unauthenticated");

        // Flip one character of the payload: the signature no longer matches.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
        parts[1].pop();
        parts[1].push(flipped);
        assert_eq!(
            keys.verify(&parts.join(".")).unwrap_err().code,
            "unauthenticated"
        );

        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
    }
}
