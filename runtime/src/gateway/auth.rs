//! Who is calling: API keys and JWT bearer tokens.
//!
//! The gateway authenticates every request before it reaches an actor. The gateway's
//! configuration lists API keys ([`ApiKeyConfig`]) and JWT verification keys ([`JwtKeyConfig`]);
//! [`Authenticator::new`] checks that list once at start-up (secrets present, algorithms allowed,
//! public keys that parse and are large enough, no duplicates) and refuses it with a typed
//! [`ConfigError`]. At request time the gateway asks either [`Authenticator::api_key`] or
//! [`Authenticator::bearer`], depending on the route's configured scheme, and gets an
//! [`Identity`] (who, and through which configured key) or an [`AuthError`]. The identity feeds
//! the grants check and the rate limiter (see [`super::limit`]); the error becomes a
//! `401 Unauthorized` whose `WWW-Authenticate` header is [`AuthError::www_authenticate`].
//!
//! # API keys
//!
//! A client presents its key in `x-api-key: <key>` or `Authorization: ApiKey <key>`. The
//! authenticator keeps only the SHA-256 digest of each configured key and compares the digest
//! of the presented key with *every* configured digest in constant time, so neither the keys
//! nor which key came close leak through timing.
//!
//! # JWT bearer tokens
//!
//! A client presents `Authorization: Bearer <jwt>`. The rules, each of which a unit test below
//! pins down:
//!
//! - The signing algorithm is fixed per key in the configuration (`HS256` or `RS256`), never
//!   taken from the token: a token whose header `alg` differs from its key's algorithm is
//!   refused. This refuses `alg: none` and the classic algorithm confusion, where an attacker
//!   signs an `HS256` token using an `RS256` key's public PEM as the HMAC secret.
//! - The key is chosen by the header's `kid`; a `kid` that names no configured key is refused.
//!   A token without `kid` is accepted only when exactly one JWT key is configured. Header
//!   fields that point at keys elsewhere (`jku`, `x5u`, `jwk`) are ignored: keys come only from
//!   the configuration. A `crit` header is refused, as no extension is understood.
//! - `exp` is required and checked with the key's leeway; `nbf` is checked when present.
//! - When the key has an `audience`, the token's `aud` must contain it. When the key has none,
//!   a token that carries an `aud` is refused (RFC 7519 §4.1.3: a recipient that does not
//!   identify itself with the audience must reject it): configure `audience` to accept tokens
//!   from an identity provider that sets one.
//! - When the key has an `issuer`, the token's `iss` must equal it.
//! - `sub` is required and must be a non-empty string: it becomes [`Identity::subject`].
//!
//! Error messages name what was wrong with a credential, never the credential or a secret.

use std::env::VarError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Once;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HeaderName};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The header a client may put its API key in (the alternative is `Authorization: ApiKey`).
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The shortest accepted `HS256` secret, in bytes: RFC 7518 §3.2 requires a key at least as
/// long as the hash output.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The smallest accepted RSA modulus, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// The largest accepted clock-skew leeway for `exp` and `nbf`, in seconds.
pub const MAX_LEEWAY_S: u64 = 300;

fn default_leeway_s() -> u64 {
    60
}

/// One API key the gateway accepts, as written in the gateway configuration.
///
/// Exactly one of `key` and `key_env` must be given. Its `Debug` output redacts the key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's name: it appears in logs and is [`Identity::key_id`]. Never the key itself.
    pub id: String,
    /// The principal a request with this key acts as ([`Identity::subject`]).
    pub subject: String,
    /// The key itself, inline.
    pub key: Option<String>,
    /// The name of an environment variable holding the key.
    pub key_env: Option<String>,
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("key_env", &self.key_env)
            .finish()
    }
}

/// One key that verifies JWT bearer tokens, as written in the gateway configuration.
///
/// An `HS256` key takes exactly one of `secret` and `secret_env`; an `RS256` key takes exactly
/// one of `public_key_pem` and `public_key_file`. Its `Debug` output redacts the secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The key id: tokens select this key with their header's `kid`. It is
    /// [`Identity::key_id`] for tokens it verifies.
    pub kid: String,
    /// The signing algorithm: `"HS256"` or `"RS256"`. Tokens must declare exactly this one.
    pub alg: String,
    /// The HMAC secret (`HS256`), inline; at least [`MIN_HS256_SECRET_BYTES`] bytes.
    pub secret: Option<String>,
    /// The name of an environment variable holding the HMAC secret (`HS256`).
    pub secret_env: Option<String>,
    /// The RSA public key (`RS256`), inline PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub public_key_pem: Option<String>,
    /// A file holding the RSA public key (`RS256`) as PEM.
    pub public_key_file: Option<PathBuf>,
    /// When set, tokens must carry this value in `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry exactly this `iss`.
    pub issuer: Option<String>,
    /// Clock skew tolerated when checking `exp` and `nbf`, in seconds (default 60, at most
    /// [`MAX_LEEWAY_S`]).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
}

impl fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeyConfig")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("secret_env", &self.secret_env)
            .field("public_key_pem", &self.public_key_pem.as_ref().map(|_| "…"))
            .field("public_key_file", &self.public_key_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

/// Who an authenticated request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal: the API key's configured subject, or the token's `sub` claim.
    pub subject: String,
    /// The configured key that vouched for it: the API key's `id`, or the JWT key's `kid`.
    pub key_id: String,
}

/// Why the gateway's authentication configuration was refused.
///
/// Messages name the configuration entry and the field to fix; they never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field that must have content is empty.
    #[error("{entry}: `{field}` must not be empty")]
    EmptyField {
        /// The entry, such as "API key `ops`".
        entry: String,
        /// The field.
        field: &'static str,
    },
    /// An API key has neither `key` nor `key_env`.
    #[error("API key `{id}` has no key: give `key` or `key_env`")]
    MissingApiKey {
        /// The key's id.
        id: String,
    },
    /// An API key has both `key` and `key_env`.
    #[error("API key `{id}` has both `key` and `key_env`: give exactly one")]
    ApiKeyAndEnv {
        /// The key's id.
        id: String,
    },
    /// A `*_env` field names an environment variable that is not set.
    #[error("{entry}: the environment variable `{var}` is not set")]
    EnvVarUnset {
        /// The entry, such as "JWT key `main`".
        entry: String,
        /// The variable's name.
        var: String,
    },
    /// A `*_env` field names an environment variable that is empty or not UTF-8.
    #[error("{entry}: the environment variable `{var}` is empty or not valid UTF-8")]
    EnvVarInvalid {
        /// The entry, such as "JWT key `main`".
        entry: String,
        /// The variable's name.
        var: String,
    },
    /// Two API keys have the same id.
    #[error("two API keys have the id `{id}`: ids must be unique")]
    DuplicateApiKeyId {
        /// The repeated id.
        id: String,
    },
    /// Two API keys have the same key value, so a request could not say which one it is.
    #[error("API keys `{first}` and `{second}` have the same key: give each client its own key")]
    DuplicateApiKey {
        /// The first entry's id.
        first: String,
        /// The second entry's id.
        second: String,
    },
    /// Two JWT keys have the same `kid`.
    #[error("two JWT keys have the kid `{kid}`: kids must be unique")]
    DuplicateKid {
        /// The repeated kid.
        kid: String,
    },
    /// A JWT key names an algorithm other than `HS256` and `RS256`.
    #[error("JWT key `{kid}`: the algorithm `{alg}` is not supported: use \"HS256\" or \"RS256\"")]
    UnsupportedAlgorithm {
        /// The key's kid.
        kid: String,
        /// The configured algorithm.
        alg: String,
    },
    /// An `HS256` key has neither `secret` nor `secret_env`.
    #[error("JWT key `{kid}` (HS256) has no secret: give `secret` or `secret_env`")]
    MissingSecret {
        /// The key's kid.
        kid: String,
    },
    /// An `HS256` key has both `secret` and `secret_env`.
    #[error("JWT key `{kid}` has both `secret` and `secret_env`: give exactly one")]
    SecretAndEnv {
        /// The key's kid.
        kid: String,
    },
    /// An `HS256` secret is shorter than [`MIN_HS256_SECRET_BYTES`].
    #[error(
        "JWT key `{kid}`: the HS256 secret is {len} bytes; at least {min} are required (RFC 7518 §3.2), for example 32 random bytes, hex-encoded"
    )]
    SecretTooShort {
        /// The key's kid.
        kid: String,
        /// The secret's length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// An `RS256` key has neither `public_key_pem` nor `public_key_file`.
    #[error(
        "JWT key `{kid}` (RS256) has no public key: give `public_key_pem` or `public_key_file`"
    )]
    MissingPublicKey {
        /// The key's kid.
        kid: String,
    },
    /// An `RS256` key has both `public_key_pem` and `public_key_file`.
    #[error("JWT key `{kid}` has both `public_key_pem` and `public_key_file`: give exactly one")]
    PublicKeyPemAndFile {
        /// The key's kid.
        kid: String,
    },
    /// An `RS256` key was given an HMAC secret.
    #[error(
        "JWT key `{kid}` is RS256 but has `secret` or `secret_env`: RS256 tokens are verified with a public key (`public_key_pem` or `public_key_file`)"
    )]
    SecretForRsaKey {
        /// The key's kid.
        kid: String,
    },
    /// An `HS256` key was given a public key.
    #[error(
        "JWT key `{kid}` is HS256 but has `public_key_pem` or `public_key_file`: HS256 tokens are verified with a shared `secret` or `secret_env`"
    )]
    PublicKeyForHmacKey {
        /// The key's kid.
        kid: String,
    },
    /// The public key file could not be read.
    #[error("JWT key `{kid}`: cannot read the public key file {path}: {source}")]
    ReadPublicKey {
        /// The key's kid.
        kid: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The public key is not an RSA public key in PEM.
    #[error("JWT key `{kid}`: the public key is not a valid RSA public key in PEM: {reason}")]
    InvalidPublicKey {
        /// The key's kid.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The RSA public key is smaller than [`MIN_RSA_BITS`].
    #[error("JWT key `{kid}`: the RSA key has {bits} bits; at least {min} are required")]
    RsaKeyTooSmall {
        /// The key's kid.
        kid: String,
        /// The modulus size.
        bits: usize,
        /// The minimum.
        min: usize,
    },
    /// The leeway is larger than [`MAX_LEEWAY_S`].
    #[error("JWT key `{kid}`: `leeway_s` = {leeway_s} is above the maximum of {max} seconds")]
    LeewayTooLarge {
        /// The key's kid.
        kid: String,
        /// The configured leeway.
        leeway_s: u64,
        /// The maximum.
        max: u64,
    },
}

/// Why a request's credentials were refused.
///
/// Every variant means `401 Unauthorized`; [`AuthError::www_authenticate`] gives the header to
/// send with it. Messages describe the problem without repeating the credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carries no credentials for the scheme.
    #[error("no credentials were presented")]
    Missing,
    /// The API key matches no configured key.
    #[error("the API key is not recognised")]
    Unknown,
    /// The credentials are not in the expected shape (header syntax, token encoding, claims).
    #[error("the credentials are malformed")]
    Malformed,
    /// The token's `alg` is not the algorithm configured for its key.
    #[error("the token's signing algorithm is not allowed for its key")]
    AlgorithmNotAllowed,
    /// The token's signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// The token's `nbf` lies in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token is not meant for this gateway's audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// The token comes from an issuer this gateway does not trust.
    #[error("the token comes from an issuer this gateway does not trust")]
    WrongIssuer,
    /// The token has no string `sub` claim.
    #[error("the token has no subject (`sub`)")]
    MissingSubject,
    /// The token's `kid` names no configured key, or it has none and several keys are configured.
    #[error("the token names no signing key this gateway knows")]
    UnknownKeyId,
}

impl AuthError {
    /// The `WWW-Authenticate` header value for a `401` carrying this error, for `scheme`
    /// (`"Bearer"` or `"ApiKey"`).
    ///
    /// Following RFC 6750 §3: a request without credentials gets the bare scheme; a malformed
    /// one `error="invalid_request"`; any other refusal `error="invalid_token"`. Each error
    /// adds an `error_description` with this error's message (which holds no secrets).
    pub fn www_authenticate(&self, scheme: &str) -> String {
        let code = match self {
            AuthError::Missing => return scheme.to_owned(),
            AuthError::Malformed => "invalid_request",
            _ => "invalid_token",
        };
        format!("{scheme} error=\"{code}\", error_description=\"{self}\"")
    }
}

/// A configured API key: only its digest is kept.
#[derive(Clone)]
struct ApiKeyEntry {
    id: String,
    subject: String,
    digest: [u8; 32],
}

/// A configured JWT key, ready to verify.
#[derive(Clone)]
struct JwtKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// Checks API keys and JWT bearer tokens against the gateway's configured keys.
///
/// Built once at start-up by [`Authenticator::new`]; cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct Authenticator {
    api_keys: Vec<ApiKeyEntry>,
    jwt_keys: Vec<JwtKey>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "api_keys",
                &self.api_keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .field(
                "jwt_keys",
                &self.jwt_keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Authenticator {
    /// Checks the configured keys and builds the authenticator.
    ///
    /// Reads the `*_env` variables and `public_key_file`s now, so a missing secret fails at
    /// start-up rather than at the first request. See [`ConfigError`] for what is refused.
    pub fn new(api_keys: &[ApiKeyConfig], jwt_keys: &[JwtKeyConfig]) -> Result<Self, ConfigError> {
        Self::with_env(api_keys, jwt_keys, &|var| std::env::var(var))
    }

    /// [`Authenticator::new`] with the environment given as a function (for tests).
    fn with_env(
        api_keys: &[ApiKeyConfig],
        jwt_keys: &[JwtKeyConfig],
        env: &dyn Fn(&str) -> Result<String, VarError>,
    ) -> Result<Self, ConfigError> {
        ensure_crypto_provider();
        let mut api = Vec::with_capacity(api_keys.len());
        for config in api_keys {
            let entry = api_key_entry(config, env)?;
            if api.iter().any(|e: &ApiKeyEntry| e.id == entry.id) {
                return Err(ConfigError::DuplicateApiKeyId { id: entry.id });
            }
            if let Some(other) = api.iter().find(|e| e.digest == entry.digest) {
                return Err(ConfigError::DuplicateApiKey {
                    first: other.id.clone(),
                    second: entry.id,
                });
            }
            api.push(entry);
        }
        let mut jwt = Vec::with_capacity(jwt_keys.len());
        for config in jwt_keys {
            let key = jwt_key(config, env)?;
            if jwt.iter().any(|k: &JwtKey| k.kid == key.kid) {
                return Err(ConfigError::DuplicateKid { kid: key.kid });
            }
            jwt.push(key);
        }
        Ok(Authenticator {
            api_keys: api,
            jwt_keys: jwt,
        })
    }

    /// Whether any API key is configured.
    pub fn has_api_keys(&self) -> bool {
        !self.api_keys.is_empty()
    }

    /// Whether any JWT key is configured.
    pub fn has_jwt_keys(&self) -> bool {
        !self.jwt_keys.is_empty()
    }

    /// Authenticates a request by its API key.
    ///
    /// The key is read from `x-api-key` or from `Authorization: ApiKey <key>` (scheme name
    /// case-insensitive); if both are present they must agree. The presented key's SHA-256
    /// digest is compared with every configured key's digest in constant time.
    ///
    /// # Errors
    ///
    /// [`AuthError::Missing`] without a key, [`AuthError::Malformed`] for a repeated or
    /// unreadable header or two different keys, [`AuthError::Unknown`] for a key that is not
    /// configured.
    pub fn api_key(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let presented = presented_api_key(headers)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Keys are unique (checked in `new`), so at most one digest matches: `found` is its
        // index plus one, accumulated without branching on secret data.
        let mut found = 0usize;
        for (index, entry) in self.api_keys.iter().enumerate() {
            found |= usize::from(ct_eq(&digest, &entry.digest)) * (index + 1);
        }
        match found.checked_sub(1).and_then(|i| self.api_keys.get(i)) {
            Some(entry) => Ok(Identity {
                subject: entry.subject.clone(),
                key_id: entry.id.clone(),
            }),
            None => Err(AuthError::Unknown),
        }
    }

    /// Authenticates a request by its `Authorization: Bearer <jwt>` token.
    ///
    /// See the [module documentation](self) for the rules.
    ///
    /// # Errors
    ///
    /// [`AuthError::Missing`] without a bearer token; otherwise the first rule the token
    /// breaks.
    pub fn bearer(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let value = single_header(headers, &AUTHORIZATION)?.ok_or(AuthError::Missing)?;
        let token = scheme_param(value, "Bearer").ok_or(AuthError::Missing)??;
        self.verify_jwt(token)
    }

    /// Verifies a compact JWT (the part after `Bearer `).
    fn verify_jwt(&self, token: &str) -> Result<Identity, AuthError> {
        let header = raw_header(token)?;
        // The algorithm is judged before the key is looked up, so `alg: none` and any
        // algorithm outside the supported pair is refused as such whatever its `kid`.
        let alg = match header.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            _ => return Err(AuthError::AlgorithmNotAllowed),
        };
        let key = match &header.kid {
            Some(kid) => self.jwt_keys.iter().find(|k| &k.kid == kid),
            None if self.jwt_keys.len() == 1 => self.jwt_keys.first(),
            None => None,
        }
        .ok_or(AuthError::UnknownKeyId)?;
        if alg != key.alg {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        match data.claims.sub {
            Some(serde_json::Value::String(sub)) if !sub.is_empty() => Ok(Identity {
                subject: sub,
                key_id: key.kid.clone(),
            }),
            _ => Err(AuthError::MissingSubject),
        }
    }
}

/// The claims the gateway reads itself; jsonwebtoken validates `exp`, `nbf`, `aud` and `iss`.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
}

/// The header fields judged before jsonwebtoken sees the token. Parsed by hand because
/// jsonwebtoken cannot represent `alg: none`, which must be reported as a refused algorithm.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Checks the token's shape (three base64url segments) and decodes its header.
fn raw_header(token: &str) -> Result<RawHeader, AuthError> {
    let well_formed = token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b == b'.' || b == b'-' || b == b'_' || b.is_ascii_alphanumeric());
    if !well_formed {
        return Err(AuthError::Malformed);
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let json = base64url_decode(encoded).ok_or(AuthError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    Ok(header)
}

/// Maps a jsonwebtoken refusal to the gateway's.
fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "aud" => AuthError::WrongAudience,
            "iss" => AuthError::WrongIssuer,
            "sub" => AuthError::MissingSubject,
            _ => AuthError::Malformed,
        },
        _ => AuthError::Malformed,
    }
}

/// Installs jsonwebtoken's RustCrypto provider as the process default, once.
///
/// jsonwebtoken picks a provider from its crate features, which works while only `rust_crypto`
/// is enabled; installing it explicitly keeps verification working if another crate in the
/// build also enables `aws_lc_rs` (with both features, the automatic choice panics). If an
/// embedder installed a provider first, theirs is kept.
fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _already_installed = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
            .install_default()
            .is_err();
    });
}

fn api_entry_name(id: &str) -> String {
    format!("API key `{id}`")
}

fn jwt_entry_name(kid: &str) -> String {
    format!("JWT key `{kid}`")
}

/// Reads a secret from an environment variable.
fn secret_from_env(
    entry: String,
    var: &str,
    env: &dyn Fn(&str) -> Result<String, VarError>,
) -> Result<String, ConfigError> {
    match env(var) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) | Err(VarError::NotUnicode(_)) => Err(ConfigError::EnvVarInvalid {
            entry,
            var: var.to_owned(),
        }),
        Err(VarError::NotPresent) => Err(ConfigError::EnvVarUnset {
            entry,
            var: var.to_owned(),
        }),
    }
}

fn api_key_entry(
    config: &ApiKeyConfig,
    env: &dyn Fn(&str) -> Result<String, VarError>,
) -> Result<ApiKeyEntry, ConfigError> {
    let entry = || api_entry_name(&config.id);
    if config.id.is_empty() {
        return Err(ConfigError::EmptyField {
            entry: "an API key".to_owned(),
            field: "id",
        });
    }
    if config.subject.is_empty() {
        return Err(ConfigError::EmptyField {
            entry: entry(),
            field: "subject",
        });
    }
    let key = match (&config.key, &config.key_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::ApiKeyAndEnv {
                id: config.id.clone(),
            });
        }
        (None, None) => {
            return Err(ConfigError::MissingApiKey {
                id: config.id.clone(),
            });
        }
        (Some(key), None) => key.clone(),
        (None, Some(var)) => secret_from_env(entry(), var, env)?,
    };
    if key.is_empty() {
        return Err(ConfigError::EmptyField {
            entry: entry(),
            field: "key",
        });
    }
    Ok(ApiKeyEntry {
        id: config.id.clone(),
        subject: config.subject.clone(),
        digest: Sha256::digest(key.as_bytes()).into(),
    })
}

fn jwt_key(
    config: &JwtKeyConfig,
    env: &dyn Fn(&str) -> Result<String, VarError>,
) -> Result<JwtKey, ConfigError> {
    let kid = || config.kid.clone();
    if config.kid.is_empty() {
        return Err(ConfigError::EmptyField {
            entry: "a JWT key".to_owned(),
            field: "kid",
        });
    }
    for (field, value) in [("audience", &config.audience), ("issuer", &config.issuer)] {
        if value.as_deref() == Some("") {
            return Err(ConfigError::EmptyField {
                entry: jwt_entry_name(&config.kid),
                field,
            });
        }
    }
    if config.leeway_s > MAX_LEEWAY_S {
        return Err(ConfigError::LeewayTooLarge {
            kid: kid(),
            leeway_s: config.leeway_s,
            max: MAX_LEEWAY_S,
        });
    }
    let has_secret = config.secret.is_some() || config.secret_env.is_some();
    let has_public_key = config.public_key_pem.is_some() || config.public_key_file.is_some();
    let (alg, key) = match config.alg.as_str() {
        "HS256" => {
            if has_public_key {
                return Err(ConfigError::PublicKeyForHmacKey { kid: kid() });
            }
            let secret = match (&config.secret, &config.secret_env) {
                (Some(_), Some(_)) => return Err(ConfigError::SecretAndEnv { kid: kid() }),
                (None, None) => return Err(ConfigError::MissingSecret { kid: kid() }),
                (Some(secret), None) => secret.clone(),
                (None, Some(var)) => secret_from_env(jwt_entry_name(&config.kid), var, env)?,
            };
            if secret.len() < MIN_HS256_SECRET_BYTES {
                return Err(ConfigError::SecretTooShort {
                    kid: kid(),
                    len: secret.len(),
                    min: MIN_HS256_SECRET_BYTES,
                });
            }
            (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )
        }
        "RS256" => {
            if has_secret {
                return Err(ConfigError::SecretForRsaKey { kid: kid() });
            }
            let pem = match (&config.public_key_pem, &config.public_key_file) {
                (Some(_), Some(_)) => return Err(ConfigError::PublicKeyPemAndFile { kid: kid() }),
                (None, None) => return Err(ConfigError::MissingPublicKey { kid: kid() }),
                (Some(pem), None) => pem.as_bytes().to_vec(),
                (None, Some(path)) => {
                    std::fs::read(path).map_err(|source| ConfigError::ReadPublicKey {
                        kid: kid(),
                        path: path.clone(),
                        source,
                    })?
                }
            };
            (Algorithm::RS256, rsa_public_key(&config.kid, &pem)?)
        }
        other => {
            return Err(ConfigError::UnsupportedAlgorithm {
                kid: kid(),
                alg: other.to_owned(),
            });
        }
    };
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = config.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    let mut required = vec!["exp"];
    if let Some(audience) = &config.audience {
        validation.set_audience(&[audience]);
        required.push("aud");
    }
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    Ok(JwtKey {
        kid: kid(),
        alg,
        key,
        validation,
    })
}

/// Parses an RSA public key PEM and checks that it really is a public key of at least
/// [`MIN_RSA_BITS`] bits (jsonwebtoken would otherwise only find out at the first request).
fn rsa_public_key(kid: &str, pem: &[u8]) -> Result<DecodingKey, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidPublicKey {
        kid: kid.to_owned(),
        reason,
    };
    if pem
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(invalid(
            "it is a private key: configure the public half (`openssl rsa -in key.pem -pubout`) and keep the private key off the gateway".to_owned(),
        ));
    }
    let key = DecodingKey::from_rsa_pem(pem).map_err(|e| invalid(e.to_string()))?;
    let bits = rsa_modulus_bits(key.as_bytes())
        .ok_or_else(|| invalid("the key is not an RSA public key".to_owned()))?;
    if bits < MIN_RSA_BITS {
        return Err(ConfigError::RsaKeyTooSmall {
            kid: kid.to_owned(),
            bits,
            min: MIN_RSA_BITS,
        });
    }
    Ok(key)
}

/// The modulus size of a DER `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`, RFC 8017
/// A.1.1), or `None` if the bytes are not exactly that with a positive modulus and odd exponent.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (0x30, body, []) = der_tlv(der)? else {
        return None;
    };
    let (0x02, n, rest) = der_tlv(body)? else {
        return None;
    };
    let (0x02, e, []) = der_tlv(rest)? else {
        return None;
    };
    // DER integers are two's complement: a set top bit would make them negative.
    if n.first()? & 0x80 != 0 || e.first()? & 0x80 != 0 || e.last()? & 1 == 0 {
        return None;
    }
    let n = &n[n.iter().position(|&b| b != 0)?..];
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

/// Splits one DER tag-length-value off the front of `input`: (tag, value, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

/// Decodes unpadded base64url (RFC 4648 §5), refusing non-canonical trailing bits.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input.as_bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

/// Compares two digests in constant time: 1 if equal, 0 if not.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // 1 when diff == 0, without a branch: (0 - 1) >> 8 sets the low bit only for zero.
    ((u16::from(std::hint::black_box(diff)).wrapping_sub(1) >> 8) & 1) as u8
}

/// The value of a header that may appear at most once, as text.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    value.to_str().map(Some).map_err(|_| AuthError::Malformed)
}

/// The credential after `scheme` in an `Authorization` value (scheme case-insensitive), or
/// `None` if the value uses another scheme.
fn scheme_param<'a>(value: &'a str, scheme: &str) -> Option<Result<&'a str, AuthError>> {
    let value = value.trim_matches([' ', '\t']);
    let (name, param) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !name.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let param = param.trim_matches([' ', '\t']);
    if param.is_empty() || param.contains([' ', '\t']) {
        return Some(Err(AuthError::Malformed));
    }
    Some(Ok(param))
}

/// The API key a request presents, from `x-api-key` or `Authorization: ApiKey`.
fn presented_api_key(headers: &HeaderMap) -> Result<&str, AuthError> {
    let header = match single_header(headers, &X_API_KEY)? {
        Some(value) => {
            let value = value.trim_matches([' ', '\t']);
            if value.is_empty() {
                return Err(AuthError::Malformed);
            }
            Some(value)
        }
        None => None,
    };
    let authorization = match single_header(headers, &AUTHORIZATION)? {
        Some(value) => scheme_param(value, "ApiKey").transpose()?,
        None => None,
    };
    match (header, authorization) {
        (Some(a), Some(b)) if a != b => Err(AuthError::Malformed),
        (Some(key), _) | (None, Some(key)) => Ok(key),
        (None, None) => Err(AuthError::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

    /// A 2048-bit RSA key pair made for these tests with `openssl genrsa -traditional 2048`.
    const RSA_PRIVATE_PEM: &str = r"-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAz5xUk9ydYY/ODNrVRQYiTnHZ0/sLFdtnIsocx9XAB9dy+L8b
lrO1Q8uWY/gEzRtrR9TED06Fs6sow0ezpWTbBzVlWbXosZw1Pd0L6zhWn0273YrE
61Y4QTg76SAhR5D5MaQr/CYyZ1ZxSDjxC1wYyFmT+74kZMHJtHglNTStp83fyRW1
zQ1LBwY5NyQM7yy/8eOrXwJJkXx2HyBn4s2zJ1mPEgLXzhBz9nhObuWEXNk7Qixk
mP5LVj+EfjQzRRS6T9T6JlN283hh68PE9a/5NfANka69m4uWkRhrrEyrk1Yg0OoS
ONCtBTcn7EOGg2YZFJpjkWRSRKEotTGL+mNEMwIDAQABAoIBABUBHYN6KggRWwjs
6O/bT4Q9O4sZVoVHFdesuB21sAB7GTw2ZY2pL9kkk1oY4S95KzDww0dDK/7B/dVH
/1Jn8kr36YGaiGjTw4U3RHnvUMA8RpoC7KpcpkNe85zB7ewGLFgL4pFXsfjHg52J
eUWrcyxt961cDuWMv6H9F9KaukkEOdZDz3Kvqr+C/DN1b9Ix9IJ9vFRpTz3uzJ6A
+WAn/u87DPVWTeCLKh5wNL39g3KpgltsJrFiGPhIaprfzhrwZ33y2+4VxF7QkvB5
9zdV/2WGEI9C9oip8IrEtXHeLLUp3pEfL/ZGas1Lt0YlnOBDLwnmnfpOdnnCIIdx
UYhOio0CgYEA/fqddtnqvBAX+ZDmul3TMxSQQTP/bhu5kC1sWklW6ZGTBHlk73tN
D4+Z6gpIWjQL5auYTOznZXUhNoH+oftLppwZsMSSqjXBxuL2MMGMtjpQzem+Ay7o
dDtvh6K2mVnoO87n613tvrLHjRy0OxYqAqz6LvHC4Bu9x7SShmHthmcCgYEA0UNB
8+mTIHoKE+0j9vFDq4q2IHAFKvxy5b1Jkql0Cuw99AEaaiw6uk3Mc3tTYmgVqxxc
JJX0e7ovZMXZwUom4ZyrDlmjNRR4jObAz6GbShsDVygVkc1kwKn5HOzu8n5dDUwS
IgLQM8+RiiznCKMcpdXtUDaEyW2IJymrPiJevFUCgYAZGcSoM19EmN6VtqFm99Dg
sn6TQx1Sd4D+Y87amXbyfIWoIos8M9Zo3Etc2wlNiOlIGI5jw+IWn93Zcj2FKr3O
SI0tcDACjG+LRXEJXoeWlurXfutdiyxEGH+sSwN64mzWRFudYloVx7t7EcQqNsWO
ICRVsWUOGw/Fhe4ZQ+JirwKBgQCSPdaRhuJzB9aTJl7D7MfF0iKFeMOjztjdBPOt
sw6Ns5t4Mm0rVc2U9Vm0OrODSgoakq8yQjmhXfRREJOlKRUTBlHkrXAJYEz+6yRD
9kR3/XjQKAsq4cdPfXnCZTJ39SdCa68gZabrDlw/nDG5L4SNwHsgW3lg61MDS3OI
8KwUIQKBgDWwTrfGyZBWDAVz80Rgh7WKSaPfCkhBoXoZ/MrQrmZd2sGlwen1zFxX
0/014+IGPa6chDmfYoQFCMTEZkF9UtCwQeAdv9Z0YbM3YNFTuUjEn/UrH0e8yIHm
MM4XqRU6y1bcPJ870MUvPUtw85jEYcqaOkb/oI3ywbKWLehNf4gV
-----END RSA PRIVATE KEY-----
";
    const RSA_PUBLIC_PEM: &str = r"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAz5xUk9ydYY/ODNrVRQYi
TnHZ0/sLFdtnIsocx9XAB9dy+L8blrO1Q8uWY/gEzRtrR9TED06Fs6sow0ezpWTb
BzVlWbXosZw1Pd0L6zhWn0273YrE61Y4QTg76SAhR5D5MaQr/CYyZ1ZxSDjxC1wY
yFmT+74kZMHJtHglNTStp83fyRW1zQ1LBwY5NyQM7yy/8eOrXwJJkXx2HyBn4s2z
J1mPEgLXzhBz9nhObuWEXNk7QixkmP5LVj+EfjQzRRS6T9T6JlN283hh68PE9a/5
NfANka69m4uWkRhrrEyrk1Yg0OoSONCtBTcn7EOGg2YZFJpjkWRSRKEotTGL+mNE
MwIDAQAB
-----END PUBLIC KEY-----
";
    /// A 1024-bit RSA public key, too small to be accepted.
    const RSA_1024_PUBLIC_PEM: &str = r"-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFua5NK43GoFp/LTMwAm6MsWEL
EUOauxWGR17vwX8hPFStNWjlL/FG1hsZstwrE36vQF40EIWoJpOFv960xwS+kd3o
HlNKcp0y2mE6vIJ0JJB6fojZORCDXVtG0ce9j5HlRCNdXlgRMAmr6CL043uRdPvr
9megTenh87yYPcUZvwIDAQAB
-----END PUBLIC KEY-----
";

    fn no_env(_: &str) -> Result<String, VarError> {
        Err(VarError::NotPresent)
    }

    fn hs_config(kid: &str) -> JwtKeyConfig {
        JwtKeyConfig {
            kid: kid.to_owned(),
            alg: "HS256".to_owned(),
            secret: Some(SECRET.to_owned()),
            secret_env: None,
            public_key_pem: None,
            public_key_file: None,
            audience: None,
            issuer: None,
            leeway_s: 60,
        }
    }

    fn rs_config(kid: &str) -> JwtKeyConfig {
        JwtKeyConfig {
            alg: "RS256".to_owned(),
            secret: None,
            public_key_pem: Some(RSA_PUBLIC_PEM.to_owned()),
            ..hs_config(kid)
        }
    }

    fn api_config(id: &str, key: &str) -> ApiKeyConfig {
        ApiKeyConfig {
            id: id.to_owned(),
            subject: format!("{id}-subject"),
            key: Some(key.to_owned()),
            key_env: None,
        }
    }

    fn jwt_auth(keys: &[JwtKeyConfig]) -> Authenticator {
        Authenticator::new(&[], keys).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({ "sub": "alice", "exp": now() + 3600 })
    }

    fn header(alg: Algorithm, kid: Option<&str>) -> Header {
        Header {
            kid: kid.map(str::to_owned),
            ..Header::new(alg)
        }
    }

    fn hs_token(kid: Option<&str>, claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&header(Algorithm::HS256, kid), claims, &key).unwrap()
    }

    fn rs_token(kid: Option<&str>, claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
        encode(&header(Algorithm::RS256, kid), claims, &key).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    /// A token assembled by hand: `header.payload.signature`.
    fn raw_token(header: &serde_json::Value, claims: &serde_json::Value, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    fn identity(subject: &str, key_id: &str) -> Identity {
        Identity {
            subject: subject.to_owned(),
            key_id: key_id.to_owned(),
        }
    }

    #[test]
    fn authenticator_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Authenticator>();
    }

    // --- JWT: accepted tokens ---

    #[test]
    fn valid_hs256_token_is_accepted_with_sub_and_kid() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(Some("hs"), &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Ok(identity("alice", "hs")));
    }

    #[test]
    fn valid_rs256_token_is_accepted_with_sub_and_kid() {
        let auth = jwt_auth(&[hs_config("hs"), rs_config("rs")]);
        let token = rs_token(Some("rs"), &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Ok(identity("alice", "rs")));
    }

    #[test]
    fn rs256_public_key_is_read_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, RSA_PUBLIC_PEM).unwrap();
        let config = JwtKeyConfig {
            public_key_pem: None,
            public_key_file: Some(path),
            ..rs_config("rs")
        };
        let auth = jwt_auth(&[config]);
        let token = rs_token(Some("rs"), &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Ok(identity("alice", "rs")));
    }

    #[test]
    fn token_without_kid_uses_the_only_configured_key() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(None, &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Ok(identity("alice", "hs")));
    }

    #[test]
    fn matching_audience_and_issuer_are_accepted() {
        let config = JwtKeyConfig {
            audience: Some("bunraku".to_owned()),
            issuer: Some("https://idp.example".to_owned()),
            ..hs_config("hs")
        };
        let auth = jwt_auth(&[config]);
        let single = json!({ "sub": "alice", "exp": now() + 60, "aud": "bunraku",
            "iss": "https://idp.example" });
        let list = json!({ "sub": "alice", "exp": now() + 60, "aud": ["other", "bunraku"],
            "iss": "https://idp.example" });
        for claims in [single, list] {
            let token = hs_token(Some("hs"), &claims);
            assert_eq!(auth.bearer(&bearer(&token)), Ok(identity("alice", "hs")));
        }
    }

    #[test]
    fn expiry_within_the_leeway_is_accepted() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(None, &json!({ "sub": "alice", "exp": now() - 10 }));
        assert_eq!(auth.bearer(&bearer(&token)), Ok(identity("alice", "hs")));
    }

    #[test]
    fn bearer_scheme_name_is_case_insensitive() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(None, &claims());
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer {token}")).unwrap(),
        );
        assert_eq!(auth.bearer(&headers), Ok(identity("alice", "hs")));
    }

    // --- JWT: refused tokens ---

    #[test]
    fn expired_token_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(None, &json!({ "sub": "alice", "exp": now() - 3600 }));
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::Expired));
    }

    #[test]
    fn token_without_exp_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(None, &json!({ "sub": "alice" }));
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::Malformed));
    }

    #[test]
    fn token_before_its_nbf_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let claims = json!({ "sub": "alice", "exp": now() + 7200, "nbf": now() + 3600 });
        let token = hs_token(None, &claims);
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::NotYetValid));
    }

    #[test]
    fn wrong_audience_is_refused() {
        let config = JwtKeyConfig {
            audience: Some("bunraku".to_owned()),
            ..hs_config("hs")
        };
        let auth = jwt_auth(&[config]);
        let token = hs_token(
            None,
            &json!({ "sub": "a", "exp": now() + 60, "aud": "billing" }),
        );
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::WrongAudience));
    }

    #[test]
    fn missing_audience_is_refused_when_one_is_configured() {
        let config = JwtKeyConfig {
            audience: Some("bunraku".to_owned()),
            ..hs_config("hs")
        };
        let auth = jwt_auth(&[config]);
        let token = hs_token(None, &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::WrongAudience));
    }

    #[test]
    fn token_with_audience_is_refused_when_none_is_configured() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(
            None,
            &json!({ "sub": "a", "exp": now() + 60, "aud": "billing" }),
        );
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::WrongAudience));
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let config = JwtKeyConfig {
            issuer: Some("https://idp.example".to_owned()),
            ..hs_config("hs")
        };
        let auth = jwt_auth(&[config]);
        let wrong = json!({ "sub": "a", "exp": now() + 60, "iss": "https://evil.example" });
        let missing = json!({ "sub": "a", "exp": now() + 60 });
        for claims in [wrong, missing] {
            let token = hs_token(None, &claims);
            assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::WrongIssuer));
        }
    }

    #[test]
    fn alg_none_token_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        for header in [
            json!({ "alg": "none", "typ": "JWT" }),
            json!({ "alg": "none", "kid": "hs" }),
            json!({ "alg": "None" }),
        ] {
            let token = raw_token(&header, &claims(), "");
            assert_eq!(
                auth.bearer(&bearer(&token)),
                Err(AuthError::AlgorithmNotAllowed),
                "{header}"
            );
        }
    }

    #[test]
    fn hs256_token_signed_with_the_rs256_public_key_is_refused() {
        // Algorithm confusion: a verifier that took the algorithm from the token would use
        // the RSA public key's PEM bytes, which are public, as the HMAC secret.
        let auth = jwt_auth(&[rs_config("rs")]);
        let forged_key = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes());
        for kid in [Some("rs"), None] {
            let token = encode(&header(Algorithm::HS256, kid), &claims(), &forged_key).unwrap();
            assert_eq!(
                auth.bearer(&bearer(&token)),
                Err(AuthError::AlgorithmNotAllowed)
            );
        }
    }

    #[test]
    fn hs512_token_for_an_hs256_key_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let token = encode(&header(Algorithm::HS512, Some("hs")), &claims(), &key).unwrap();
        assert_eq!(
            auth.bearer(&bearer(&token)),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn rs256_token_for_an_hs256_key_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = rs_token(Some("hs"), &claims());
        assert_eq!(
            auth.bearer(&bearer(&token)),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn unknown_kid_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(Some("other"), &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::UnknownKeyId));
    }

    #[test]
    fn token_without_kid_is_refused_when_several_keys_are_configured() {
        let auth = jwt_auth(&[hs_config("a"), hs_config("b")]);
        let token = hs_token(None, &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::UnknownKeyId));
    }

    #[test]
    fn bearer_token_is_refused_when_no_jwt_key_is_configured() {
        let auth = Authenticator::new(&[api_config("ops", "k")], &[]).unwrap();
        let token = hs_token(None, &claims());
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::UnknownKeyId));
    }

    #[test]
    fn token_without_sub_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        for claims in [
            json!({ "exp": now() + 60 }),
            json!({ "sub": 42, "exp": now() + 60 }),
            json!({ "sub": "", "exp": now() + 60 }),
        ] {
            let token = hs_token(None, &claims);
            assert_eq!(
                auth.bearer(&bearer(&token)),
                Err(AuthError::MissingSubject),
                "{claims}"
            );
        }
    }

    #[test]
    fn tampered_signature_is_refused() {
        let auth = jwt_auth(&[hs_config("hs"), rs_config("rs")]);
        for token in [
            hs_token(Some("hs"), &claims()),
            rs_token(Some("rs"), &claims()),
        ] {
            let (message, signature) = token.rsplit_once('.').unwrap();
            // Change the first character: it carries six signature bits, never padding bits.
            let first = if signature.starts_with('A') { 'B' } else { 'A' };
            let tampered = format!("{message}.{first}{}", &signature[1..]);
            assert_eq!(
                auth.bearer(&bearer(&tampered)),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn tampered_claims_are_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let token = hs_token(Some("hs"), &claims());
        let mut parts = token.split('.');
        let (header, _, signature) = (parts.next(), parts.next(), parts.next());
        let admin = json!({ "sub": "admin", "exp": now() + 3600 });
        let forged = format!(
            "{}.{}.{}",
            header.unwrap(),
            b64(admin.to_string().as_bytes()),
            signature.unwrap()
        );
        assert_eq!(auth.bearer(&bearer(&forged)), Err(AuthError::BadSignature));
    }

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let key = EncodingKey::from_secret(b"another secret of at least thirty-two bytes");
        let token = encode(&header(Algorithm::HS256, None), &claims(), &key).unwrap();
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::BadSignature));
    }

    #[test]
    fn token_with_crit_header_is_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let header = json!({ "alg": "HS256", "crit": ["b64"], "b64": false });
        let token = raw_token(&header, &claims(), "c2ln");
        assert_eq!(auth.bearer(&bearer(&token)), Err(AuthError::Malformed));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let auth = jwt_auth(&[hs_config("hs")]);
        let valid = hs_token(None, &claims());
        for token in [
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{valid}.extra"),
            format!("{valid}="),
            valid.replace('.', "+"),
            raw_token(&json!(["HS256"]), &claims(), "c2ln"),
            format!("{}.e30.c2ln", b64(b"not json")),
        ] {
            assert_eq!(
                auth.bearer(&bearer(&token)),
                Err(AuthError::Malformed),
                "{token}"
            );
        }
    }

    #[test]
    fn request_without_bearer_token_is_missing() {
        let auth = jwt_auth(&[hs_config("hs")]);
        assert_eq!(auth.bearer(&HeaderMap::new()), Err(AuthError::Missing));
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("ApiKey abc"));
        assert_eq!(auth.bearer(&headers), Err(AuthError::Missing));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(auth.bearer(&headers), Err(AuthError::Malformed));
    }

    // --- API keys ---

    fn api_auth() -> Authenticator {
        Authenticator::new(
            &[api_config("ops", "ops-key-1"), api_config("ci", "ci-key-2")],
            &[],
        )
        .unwrap()
    }

    fn with_header(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn right_api_key_in_x_api_key_is_accepted() {
        let result = api_auth().api_key(&with_header("x-api-key", "ci-key-2"));
        assert_eq!(result, Ok(identity("ci-subject", "ci")));
    }

    #[test]
    fn right_api_key_in_authorization_is_accepted() {
        for value in ["ApiKey ops-key-1", "apikey ops-key-1"] {
            let result = api_auth().api_key(&with_header("authorization", value));
            assert_eq!(result, Ok(identity("ops-subject", "ops")));
        }
    }

    #[test]
    fn api_key_in_both_headers_must_agree() {
        let mut headers = with_header("x-api-key", "ops-key-1");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("ApiKey ops-key-1"));
        assert_eq!(
            api_auth().api_key(&headers),
            Ok(identity("ops-subject", "ops"))
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("ApiKey ci-key-2"));
        assert_eq!(api_auth().api_key(&headers), Err(AuthError::Malformed));
    }

    #[test]
    fn x_api_key_is_used_beside_a_bearer_authorization() {
        let mut headers = with_header("x-api-key", "ops-key-1");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
        assert_eq!(
            api_auth().api_key(&headers),
            Ok(identity("ops-subject", "ops"))
        );
    }

    #[test]
    fn wrong_api_key_is_unknown() {
        let auth = api_auth();
        for key in [
            "ops-key-2",
            "ops-key-1x",
            "OPS-KEY-1",
            "ops-key-",
            "ci-key-2ops-key-1",
        ] {
            let headers = with_header("authorization", &format!("ApiKey {key}"));
            assert_eq!(auth.api_key(&headers), Err(AuthError::Unknown), "{key}");
            let headers = with_header("x-api-key", key);
            assert_eq!(auth.api_key(&headers), Err(AuthError::Unknown), "{key}");
        }
    }

    #[test]
    fn missing_api_key_is_missing() {
        let auth = api_auth();
        assert_eq!(auth.api_key(&HeaderMap::new()), Err(AuthError::Missing));
        let headers = with_header("authorization", "Bearer a.b.c");
        assert_eq!(auth.api_key(&headers), Err(AuthError::Missing));
    }

    #[test]
    fn malformed_api_key_headers_are_refused() {
        let auth = api_auth();
        assert_eq!(
            auth.api_key(&with_header("authorization", "ApiKey ")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.api_key(&with_header("authorization", "ApiKey a b")),
            Err(AuthError::Malformed)
        );
        let mut repeated = with_header("x-api-key", "ops-key-1");
        repeated.append("x-api-key", HeaderValue::from_static("ci-key-2"));
        assert_eq!(auth.api_key(&repeated), Err(AuthError::Malformed));
        let mut binary = HeaderMap::new();
        binary.insert("x-api-key", HeaderValue::from_bytes(b"k\xffey").unwrap());
        assert_eq!(auth.api_key(&binary), Err(AuthError::Malformed));
    }

    #[test]
    fn api_key_is_read_from_the_environment() {
        let config = ApiKeyConfig {
            key: None,
            key_env: Some("BUNRAKU_TEST_KEY".to_owned()),
            ..api_config("ops", "")
        };
        let env = |var: &str| {
            assert_eq!(var, "BUNRAKU_TEST_KEY");
            Ok("from-env".to_owned())
        };
        let auth = Authenticator::with_env(&[config], &[], &env).unwrap();
        assert_eq!(
            auth.api_key(&with_header("x-api-key", "from-env")),
            Ok(identity("ops-subject", "ops"))
        );
    }

    #[test]
    fn constant_time_comparison_matches_only_equal_digests() {
        let a = [7u8; 32];
        let mut b = a;
        assert_eq!(ct_eq(&a, &b), 1);
        for i in [0, 17, 31] {
            b[i] ^= 0x80;
            assert_eq!(ct_eq(&a, &b), 0);
            b[i] ^= 0x80;
        }
    }

    // --- Configuration ---

    fn config_error(api: &[ApiKeyConfig], jwt: &[JwtKeyConfig]) -> ConfigError {
        Authenticator::with_env(api, jwt, &no_env).unwrap_err()
    }

    #[test]
    fn api_key_with_both_key_and_key_env_is_refused() {
        let config = ApiKeyConfig {
            key_env: Some("X".to_owned()),
            ..api_config("ops", "k")
        };
        assert!(matches!(
            config_error(&[config], &[]),
            ConfigError::ApiKeyAndEnv { .. }
        ));
    }

    #[test]
    fn api_key_without_key_is_refused() {
        let config = ApiKeyConfig {
            key: None,
            ..api_config("ops", "k")
        };
        assert!(matches!(
            config_error(&[config], &[]),
            ConfigError::MissingApiKey { .. }
        ));
    }

    #[test]
    fn unset_env_var_is_refused() {
        let api = ApiKeyConfig {
            key: None,
            key_env: Some("BUNRAKU_UNSET".to_owned()),
            ..api_config("ops", "")
        };
        let err = config_error(&[api], &[]);
        assert!(matches!(&err, ConfigError::EnvVarUnset { var, .. } if var == "BUNRAKU_UNSET"));
        assert_eq!(
            err.to_string(),
            "API key `ops`: the environment variable `BUNRAKU_UNSET` is not set"
        );
        let jwt = JwtKeyConfig {
            secret: None,
            secret_env: Some("BUNRAKU_UNSET".to_owned()),
            ..hs_config("hs")
        };
        assert!(matches!(
            config_error(&[], std::slice::from_ref(&jwt)),
            ConfigError::EnvVarUnset { .. }
        ));
        let empty = Authenticator::with_env(&[], &[jwt], &|_| Ok(String::new())).unwrap_err();
        assert!(matches!(empty, ConfigError::EnvVarInvalid { .. }));
    }

    #[test]
    fn duplicate_ids_kids_and_keys_are_refused() {
        let err = config_error(&[api_config("ops", "a"), api_config("ops", "b")], &[]);
        assert!(matches!(err, ConfigError::DuplicateApiKeyId { .. }));
        let err = config_error(&[api_config("ops", "a"), api_config("ci", "a")], &[]);
        assert!(matches!(err, ConfigError::DuplicateApiKey { .. }));
        let err = config_error(&[], &[hs_config("k"), rs_config("k")]);
        assert!(matches!(err, ConfigError::DuplicateKid { .. }));
    }

    #[test]
    fn unsupported_algorithms_are_refused() {
        for alg in [
            "none", "None", "HS512", "RS512", "ES256", "PS256", "EdDSA", "hs256", "",
        ] {
            let config = JwtKeyConfig {
                alg: alg.to_owned(),
                ..hs_config("k")
            };
            let err = config_error(&[], &[config]);
            assert!(
                matches!(err, ConfigError::UnsupportedAlgorithm { .. }),
                "{alg}: {err}"
            );
        }
    }

    #[test]
    fn hs256_key_needs_exactly_one_long_enough_secret() {
        let missing = JwtKeyConfig {
            secret: None,
            ..hs_config("k")
        };
        assert!(matches!(
            config_error(&[], &[missing]),
            ConfigError::MissingSecret { .. }
        ));
        let both = JwtKeyConfig {
            secret_env: Some("X".to_owned()),
            ..hs_config("k")
        };
        assert!(matches!(
            config_error(&[], &[both]),
            ConfigError::SecretAndEnv { .. }
        ));
        let short = JwtKeyConfig {
            secret: Some("secret".to_owned()),
            ..hs_config("k")
        };
        let err = config_error(&[], &[short]);
        assert!(matches!(err, ConfigError::SecretTooShort { len: 6, .. }));
        assert!(!err.to_string().contains("secret\""), "{err}");
    }

    #[test]
    fn rs256_key_with_a_secret_is_refused() {
        for config in [
            JwtKeyConfig {
                secret: Some(SECRET.to_owned()),
                ..rs_config("rs")
            },
            JwtKeyConfig {
                secret_env: Some("X".to_owned()),
                ..rs_config("rs")
            },
        ] {
            assert!(matches!(
                config_error(&[], &[config]),
                ConfigError::SecretForRsaKey { .. }
            ));
        }
    }

    #[test]
    fn hs256_key_with_a_public_key_is_refused() {
        let config = JwtKeyConfig {
            public_key_pem: Some(RSA_PUBLIC_PEM.to_owned()),
            ..hs_config("hs")
        };
        assert!(matches!(
            config_error(&[], &[config]),
            ConfigError::PublicKeyForHmacKey { .. }
        ));
    }

    #[test]
    fn rs256_key_needs_exactly_one_public_key() {
        let missing = JwtKeyConfig {
            public_key_pem: None,
            ..rs_config("rs")
        };
        assert!(matches!(
            config_error(&[], &[missing]),
            ConfigError::MissingPublicKey { .. }
        ));
        let both = JwtKeyConfig {
            public_key_file: Some("key.pem".into()),
            ..rs_config("rs")
        };
        assert!(matches!(
            config_error(&[], &[both]),
            ConfigError::PublicKeyPemAndFile { .. }
        ));
    }

    #[test]
    fn unreadable_public_key_file_is_refused() {
        let config = JwtKeyConfig {
            public_key_pem: None,
            public_key_file: Some("/nonexistent/bunraku/key.pem".into()),
            ..rs_config("rs")
        };
        let err = config_error(&[], &[config]);
        assert!(matches!(err, ConfigError::ReadPublicKey { .. }), "{err}");
    }

    #[test]
    fn invalid_public_keys_are_refused() {
        for pem in [
            "not a pem".to_owned(),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned(),
            RSA_PRIVATE_PEM.to_owned(),
        ] {
            let config = JwtKeyConfig {
                public_key_pem: Some(pem),
                ..rs_config("rs")
            };
            let err = config_error(&[], &[config]);
            assert!(matches!(err, ConfigError::InvalidPublicKey { .. }), "{err}");
        }
    }

    #[test]
    fn small_rsa_key_is_refused() {
        let config = JwtKeyConfig {
            public_key_pem: Some(RSA_1024_PUBLIC_PEM.to_owned()),
            ..rs_config("rs")
        };
        let err = config_error(&[], &[config]);
        assert!(
            matches!(err, ConfigError::RsaKeyTooSmall { bits: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn large_leeway_is_refused() {
        let config = JwtKeyConfig {
            leeway_s: u64::MAX,
            ..hs_config("hs")
        };
        assert!(matches!(
            config_error(&[], &[config]),
            ConfigError::LeewayTooLarge { .. }
        ));
    }

    #[test]
    fn empty_identifiers_are_refused() {
        let err = config_error(&[api_config("", "k")], &[]);
        assert!(matches!(err, ConfigError::EmptyField { field: "id", .. }));
        let err = config_error(&[api_config("ops", "")], &[]);
        assert!(matches!(err, ConfigError::EmptyField { field: "key", .. }));
        let err = config_error(&[], &[hs_config("")]);
        assert!(matches!(err, ConfigError::EmptyField { field: "kid", .. }));
    }

    #[test]
    fn key_configs_deserialize_with_defaults_and_refuse_unknown_fields() {
        let jwt: JwtKeyConfig =
            serde_json::from_value(json!({ "kid": "k", "alg": "HS256", "secret_env": "S" }))
                .unwrap();
        assert_eq!(jwt.leeway_s, 60);
        assert!(
            serde_json::from_value::<JwtKeyConfig>(
                json!({ "kid": "k", "alg": "HS256", "algs": [] })
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<ApiKeyConfig>(
                json!({ "id": "i", "subject": "s", "key": "k", "secret": "x" })
            )
            .is_err()
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let api = format!("{:?}", api_config("ops", "hunter2-secret"));
        assert!(!api.contains("hunter2"), "{api}");
        let jwt = format!("{:?}", hs_config("hs"));
        assert!(!jwt.contains(SECRET), "{jwt}");
        let auth = format!("{:?}", jwt_auth(&[hs_config("hs")]));
        assert!(!auth.contains(SECRET), "{auth}");
    }

    #[test]
    fn www_authenticate_follows_rfc_6750() {
        assert_eq!(AuthError::Missing.www_authenticate("Bearer"), "Bearer");
        assert_eq!(
            AuthError::Expired.www_authenticate("Bearer"),
            "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
        );
        assert_eq!(
            AuthError::Malformed.www_authenticate("ApiKey"),
            "ApiKey error=\"invalid_request\", error_description=\"the credentials are malformed\""
        );
        // Every description must be a valid quoted-string without escapes.
        for err in [
            AuthError::Unknown,
            AuthError::AlgorithmNotAllowed,
            AuthError::BadSignature,
            AuthError::NotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::MissingSubject,
            AuthError::UnknownKeyId,
        ] {
            let value = err.www_authenticate("Bearer");
            assert!(HeaderValue::from_str(&value).is_ok());
            assert!(!err.to_string().contains(['"', '\\']), "{err}");
        }
    }

    #[test]
    fn base64url_decoding_refuses_non_canonical_input() {
        assert_eq!(base64url_decode("e30").as_deref(), Some(&b"{}"[..]));
        assert_eq!(base64url_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64url_decode("e31"), None); // trailing bits set
        assert_eq!(base64url_decode("e30="), None); // padding
        assert_eq!(base64url_decode("e"), None); // impossible length
        assert_eq!(base64url_decode("e3+"), None); // standard alphabet
    }
}
