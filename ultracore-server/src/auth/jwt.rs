//! Tokens: HS256 with the server's secret (minted by `ultracore token`), and optionally RS256 /
//! ES256 tokens of an OIDC provider, verified against the public keys of a JWKS file and/or a
//! JWKS URL. The URL is fetched at start and again when a token names a `kid` no loaded key
//! has (a key rotation), at most once per refresh interval, so unknown `kid`s cannot make the
//! server hammer the provider.
//! Expiry is required and enforced with a small leeway. Each key is bound to one algorithm:
//! HS256 tokens are checked only with the secret, RS256/ES256 tokens only with the JWKS key
//! named by their `kid` (and its declared algorithm), so a token signed with another algorithm,
//! `none`, or a public key used as an HMAC secret is refused.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::jwks::JwksClient;
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
    /// Authentication methods (RFC 8176); `"mfa"` marks a multi-factor login.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Issued at (seconds since the epoch).
    #[serde(default)]
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

/// A public key of an OIDC provider: (kid, algorithm, key, validation).
type JwkEntry = (String, Algorithm, DecodingKey, Validation);

/// Signing and verification keys.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Public keys from the JWKS file.
    jwks: Vec<JwkEntry>,
    /// The JWKS URL, if configured, and the keys last fetched from it.
    remote: Option<RemoteJwks>,
}

/// A JWKS fetched from a URL.
struct RemoteJwks {
    client: JwksClient,
    issuer: Option<String>,
    audience: Option<String>,
    refresh_min: Duration,
    keys: RwLock<Arc<Vec<JwkEntry>>>,
    /// When the last fetch was tried; held across a fetch so concurrent unknown `kid`s make
    /// one request.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
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
            jwks: Vec::new(),
            remote: None,
        }
    }

    /// Also accepts RS256 / ES256 tokens signed by the keys of `jwks_json` (a JWKS document).
    /// Every key needs a `kid` and an `alg` of RS256 or ES256 matching its type; symmetric
    /// (`oct`) keys are refused. `issuer` and `audience`, when given, must match those tokens'
    /// `iss` and `aud`.
    pub fn with_jwks(
        mut self,
        jwks_json: &str,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<JwtKeys, String> {
        self.jwks = parse_jwks(jwks_json, self.validation.leeway, issuer, audience)?;
        Ok(self)
    }

    /// Also accepts RS256 / ES256 tokens signed by the keys of the JWKS at `url` (same rules as
    /// [`JwtKeys::with_jwks`]). Nothing is fetched yet: call [`JwtKeys::refresh`] at start;
    /// [`JwtKeys::verify_refreshing`] fetches again on an unknown `kid`, at most once per
    /// `refresh_min`.
    pub fn with_jwks_url(
        mut self,
        client: JwksClient,
        issuer: Option<&str>,
        audience: Option<&str>,
        refresh_min: Duration,
    ) -> JwtKeys {
        self.remote = Some(RemoteJwks {
            client,
            issuer: issuer.map(str::to_string),
            audience: audience.map(str::to_string),
            refresh_min,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_fetch: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// Fetches the JWKS URL now, whenever it was last fetched, and replaces the keys from it
    /// with what it serves; returns how many keys it holds. Keeps the old keys on failure.
    pub async fn refresh(&self) -> Result<usize, String> {
        let Some(remote) = &self.remote else {
            return Ok(0);
        };
        let mut last = remote.last_fetch.lock().await;
        self.fetch_locked(remote, &mut last).await
    }

    async fn fetch_locked(
        &self,
        remote: &RemoteJwks,
        last: &mut Option<Instant>,
    ) -> Result<usize, String> {
        *last = Some(Instant::now());
        let text = remote.client.fetch().await?;
        let keys = parse_jwks(
            &text,
            self.validation.leeway,
            remote.issuer.as_deref(),
            remote.audience.as_deref(),
        )
        .map_err(|e| format!("JWKS {}: {e}", remote.client.url))?;
        let n = keys.len();
        *remote.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// Like [`JwtKeys::verify`], but a token whose `kid` no loaded key has makes the server
    /// fetch the JWKS URL again (a key rotation at the provider) and try once more, unless the
    /// URL was fetched less than the refresh interval ago.
    pub async fn verify_refreshing(&self, token: &str) -> Result<Principal, ApiError> {
        let first = self.verify(token);
        let Some(remote) = &self.remote else {
            return first;
        };
        if first.is_ok() || !self.kid_unknown(token) {
            return first;
        }
        let mut last = remote.last_fetch.lock().await;
        // Another request may have fetched the new key while this one waited.
        if !self.kid_unknown(token) {
            drop(last);
            return self.verify(token);
        }
        if last.is_some_and(|t| t.elapsed() < remote.refresh_min) {
            return first;
        }
        match self.fetch_locked(remote, &mut last).await {
            Ok(n) => {
                tracing::info!(keys = n, url = %remote.client.url, "JWKS refreshed for an unknown kid")
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
                return first;
            }
        }
        drop(last);
        self.verify(token)
    }

    /// Whether `token` names (by `kid`) a JWKS key that no loaded key has.
    fn kid_unknown(&self, token: &str) -> bool {
        let Ok(header) = decode_header(token) else {
            return false;
        };
        match (header.alg, header.kid) {
            (Algorithm::HS256, _) | (_, None) => false,
            (alg, Some(kid)) => self.find(alg, &kid, |_, _| ()).is_none(),
        }
    }

    /// Runs `f` on the JWKS key (file or URL) with this `kid` and algorithm.
    fn find<R>(
        &self,
        alg: Algorithm,
        kid: &str,
        f: impl FnOnce(&DecodingKey, &Validation) -> R,
    ) -> Option<R> {
        let hit = |e: &&JwkEntry| e.1 == alg && e.0 == kid;
        if let Some((_, _, k, v)) = self.jwks.iter().find(hit) {
            return Some(f(k, v));
        }
        let remote = self.remote.as_ref()?;
        let keys = remote
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (_, _, k, v) = keys.iter().find(hit)?;
        Some(f(k, v))
    }

    /// Mints a token for `principal` valid from `now` for `ttl_seconds`.
    pub fn mint(&self, principal: &Principal, now: u64, ttl_seconds: u64) -> String {
        let claims = Claims {
            sub: principal.sub.clone(),
            role: principal.role,
            branch: principal.branch.clone(),
            customer: principal.customer.clone(),
            amr: if principal.mfa {
                vec![super::mfa::MFA_AMR.to_string()]
            } else {
                Vec::new()
            },
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
        let header =
            decode_header(token).map_err(|_| ApiError::unauthenticated("invalid token"))?;
        let decoded = match (header.alg, header.kid.as_deref()) {
            (Algorithm::HS256, _) => decode::<Claims>(token, &self.decoding, &self.validation),
            (alg, Some(kid)) => self
                .find(alg, kid, |k, v| decode::<Claims>(token, k, v))
                .ok_or_else(|| ApiError::unauthenticated("invalid token"))?,
            (_, None) => return Err(ApiError::unauthenticated("invalid token")),
        };
        let data = decoded.map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "token_expired",
                "the token has expired",
            ),
            _ => ApiError::unauthenticated("invalid token"),
        })?;
        let c = data.claims;
        Ok(Principal {
            sub: c.sub,
            role: c.role,
            branch: c.branch,
            customer: c.customer,
            mfa: c.amr.iter().any(|m| m == super::mfa::MFA_AMR),
        })
    }
}

/// The RS256 / ES256 keys of a JWKS document, each bound to its `kid` and algorithm.
fn parse_jwks(
    jwks_json: &str,
    leeway: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<Vec<JwkEntry>, String> {
    let set: JwkSet = serde_json::from_str(jwks_json).map_err(|e| format!("invalid JWKS: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or("every JWKS key needs a kid")?;
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(_), Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
                _ => return Err(format!("JWKS key {kid}: only RSA keys with alg RS256 and EC keys with alg ES256 are accepted")),
            };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key {kid}: {e}"))?;
        let mut validation = Validation::new(alg);
        validation.leeway = leeway;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
        }
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        keys.push((kid, alg, key, validation));
    }
    Ok(keys)
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
            mfa: false,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let keys = JwtKeys::hs256(&[7u8; 32], 5);
        let now = unix_seconds();
        let t = keys.mint(&teller(), now, 60);
        assert_eq!(keys.verify(&t).unwrap(), teller());
        let stepped_up = Principal {
            mfa: true,
            ..teller()
        };
        let t = keys.mint(&stepped_up, now, 60);
        assert_eq!(
            keys.verify(&t).unwrap(),
            stepped_up,
            "amr [\"mfa\"] round-trips"
        );

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

        // A JWKS-only server still refuses an unknown kid or algorithm.
        let none = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
        assert_eq!(keys.verify(&none).unwrap_err().code, "unauthenticated");

        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
    }
}

#[cfg(test)]
mod jwks_tests {
    use super::*;
    use crate::util::{hex_decode, unix_seconds};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn es256_token(claims: &serde_json::Value, kid: &str) -> String {
        let der = hex_decode(fixture("es256-test-key.pk8.hex").trim()).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        encode(&header, claims, &EncodingKey::from_ec_der(&der)).unwrap()
    }

    #[test]
    fn es256_tokens_verify_against_the_jwks() {
        let keys = JwtKeys::hs256(&[1u8; 32], 5)
            .with_jwks(
                &fixture("jwks.json"),
                Some("https://idp.test"),
                Some("ultracore"),
            )
            .unwrap();
        let now = unix_seconds();
        let good = serde_json::json!({"sub": "oidc-user", "role": "auditor", "exp": now + 60,
            "iss": "https://idp.test", "aud": "ultracore"});
        let p = keys.verify(&es256_token(&good, "test-es256")).unwrap();
        assert_eq!((p.sub.as_str(), p.role), ("oidc-user", Role::Auditor));

        assert!(
            keys.verify(&es256_token(&good, "other-kid")).is_err(),
            "unknown kid"
        );
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = "https://evil.test".into();
        assert!(keys.verify(&es256_token(&wrong_iss, "test-es256")).is_err());
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = "someone-else".into();
        assert!(keys.verify(&es256_token(&wrong_aud, "test-es256")).is_err());
        let mut expired = good.clone();
        expired["exp"] = (now - 3600).into();
        assert_eq!(
            keys.verify(&es256_token(&expired, "test-es256"))
                .unwrap_err()
                .code,
            "token_expired"
        );

        // An `amr` with "mfa" marks the principal as stepped up.
        let mut stepped_up = good.clone();
        stepped_up["amr"] = serde_json::json!(["pwd", "mfa"]);
        assert!(
            keys.verify(&es256_token(&stepped_up, "test-es256"))
                .unwrap()
                .mfa
        );
        assert!(!p.mfa);

        // Without the JWKS, the same token is refused.
        let plain = JwtKeys::hs256(&[1u8; 32], 5);
        assert!(plain.verify(&es256_token(&good, "test-es256")).is_err());
    }

    #[test]
    fn symmetric_or_unlabelled_jwks_keys_are_refused() {
        let oct = r#"{"keys":[{"kty":"oct","kid":"k","alg":"HS256","k":"c2VjcmV0"}]}"#;
        assert!(JwtKeys::hs256(&[1u8; 32], 5)
            .with_jwks(oct, None, None)
            .is_err());
        let no_alg = fixture("jwks.json").replace("\"alg\": \"ES256\",", "");
        assert!(JwtKeys::hs256(&[1u8; 32], 5)
            .with_jwks(&no_alg, None, None)
            .is_err());
    }
}
