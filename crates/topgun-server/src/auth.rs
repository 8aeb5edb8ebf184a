//! Authentication: verifying a client's JWT and who it names.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// An authenticated user: the JWT's `sub` and its `roles` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The user id (`sub`).
    pub user_id: String,
    /// The user's roles (`roles`, empty when absent).
    pub roles: Vec<String>,
}

impl Principal {
    /// A user with these roles.
    pub fn new(user_id: impl Into<String>, roles: Vec<String>) -> Self {
        Self {
            user_id: user_id.into(),
            roles,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Checks HS256 JWTs against one secret.
pub(crate) struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier { .. }")
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret` (HS256 only). `sub` is
    /// required; `exp` and `nbf` are checked when present.
    pub(crate) fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["sub".to_owned()].into_iter().collect();
        validation.validate_nbf = true;
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The user a token names, or why it is refused (for `AUTH_FAIL`).
    pub(crate) fn verify(&self, token: &str) -> Result<Principal, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        if data.claims.sub.is_empty() {
            return Err("invalid token: empty `sub`".to_owned());
        }
        Ok(Principal::new(data.claims.sub, data.claims.roles))
    }
}
