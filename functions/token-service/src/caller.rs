//! Who is calling the token service, and what they may do.
//!
//! In AWS the routes sit behind the HTTP API's IAM authorizer: API Gateway
//! checks the SigV4 signature and puts the caller's ARN in the request
//! context, which is the only place the function reads it from (a header
//! could be set by anyone). In `tokenkeep dev` there is no API Gateway, so a
//! random key generated into the data dir (0600) stands in for IAM; a request
//! without it is refused before anything else happens.
//!
//! Two permissions exist. Every authenticated caller may `authorize` (strict
//! scoping: the tenant comes from a Slack-signed request), store an
//! installation (the tenant comes from Slack's `auth.test` for its token),
//! and read installation metadata. Reading a caller-named tenant's tokens or
//! deleting a caller-named tenant's records is the *named-tenant* permission,
//! for workers and cron jobs: off by default, granted per principal.

use std::path::Path;

use lambda_http::RequestExt as _;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use lambda_http::request::RequestContext;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// An authenticated caller. `principal` goes into every audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: String,
    pub named_tenant: bool,
}

/// How callers authenticate.
pub enum CallerAuth {
    /// Behind API Gateway's IAM authorizer. `named_tenant_principals` are the
    /// principals granted the named-tenant permission: exact ARNs, or IAM role
    /// ARNs covering every session of the role (see [`grant_matches`]).
    Iam {
        named_tenant_principals: Vec<String>,
    },
    /// `tokenkeep dev`: `Authorization: Bearer <key>`. The `jobs` key also
    /// carries the named-tenant permission.
    DevKeys {
        service: SecretString,
        jobs: SecretString,
    },
}

impl std::fmt::Debug for CallerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerAuth::Iam {
                named_tenant_principals,
            } => f
                .debug_struct("Iam")
                .field("named_tenant_principals", named_tenant_principals)
                .finish(),
            CallerAuth::DevKeys { .. } => f.debug_struct("DevKeys").finish_non_exhaustive(),
        }
    }
}

/// The two dev key files, in the data dir.
pub const DEV_KEY_FILE: &str = "token-service.key";
pub const DEV_JOBS_KEY_FILE: &str = "token-service-jobs.key";

/// The principal names dev callers get in audit records.
pub const DEV_PRINCIPAL: &str = "dev-key:token-service";
pub const DEV_JOBS_PRINCIPAL: &str = "dev-key:token-service-jobs";

impl CallerAuth {
    /// IAM mode, with the named-tenant grants from a comma-separated list
    /// (`TOKENKEEP_NAMED_TENANT_PRINCIPALS`; empty or unset: nobody).
    pub fn iam_from_list(list: &str) -> Self {
        let named_tenant_principals = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        CallerAuth::Iam {
            named_tenant_principals,
        }
    }

    /// Dev mode: reads both keys from `dir`, generating any that is missing
    /// (256 random bits, hex, file mode 0600).
    pub fn dev_keys(dir: &Path) -> std::io::Result<Self> {
        Ok(CallerAuth::DevKeys {
            service: load_or_create_key(&dir.join(DEV_KEY_FILE))?,
            jobs: load_or_create_key(&dir.join(DEV_JOBS_KEY_FILE))?,
        })
    }

    /// The caller of `req`, or `None` (the handler answers 401).
    pub fn authenticate(&self, req: &http::Request<axum::body::Body>) -> Option<Caller> {
        match self {
            CallerAuth::Iam {
                named_tenant_principals,
            } => {
                let Some(RequestContext::ApiGatewayV2(ApiGatewayV2httpRequestContext {
                    authorizer: Some(authorizer),
                    ..
                })) = req.request_context_ref()
                else {
                    return None;
                };
                let arn = authorizer.iam.as_ref()?.user_arn.as_ref()?.clone();
                let named_tenant = named_tenant_principals
                    .iter()
                    .any(|grant| grant_matches(grant, &arn));
                Some(Caller {
                    principal: arn,
                    named_tenant,
                })
            }
            CallerAuth::DevKeys { service, jobs } => {
                let given = req
                    .headers()
                    .get(http::header::AUTHORIZATION)?
                    .to_str()
                    .ok()?;
                let given = given.strip_prefix("Bearer ")?.trim().as_bytes();
                // Both compared, in constant time, so timing says nothing about which matched.
                let is_service = bool::from(given.ct_eq(service.expose_secret().as_bytes()));
                let is_jobs = bool::from(given.ct_eq(jobs.expose_secret().as_bytes()));
                match (is_service, is_jobs) {
                    (_, true) => Some(Caller {
                        principal: DEV_JOBS_PRINCIPAL.to_owned(),
                        named_tenant: true,
                    }),
                    (true, false) => Some(Caller {
                        principal: DEV_PRINCIPAL.to_owned(),
                        named_tenant: false,
                    }),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Whether a named-tenant grant covers the caller's ARN. A grant is an exact
/// ARN, or an IAM role ARN (`arn:aws:iam::ACCOUNT:role/[path/]NAME`), which
/// covers every session of that role: API Gateway reports a role's callers as
/// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`, and the session name is
/// chosen by whoever assumes the role, so only the role part can be granted.
pub fn grant_matches(grant: &str, caller: &str) -> bool {
    if grant == caller {
        return true;
    }
    let mut parts = grant.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Some(role_path) = resource.strip_prefix("role/") else {
        return false;
    };
    let name = role_path.rsplit('/').next().unwrap_or(role_path);
    if name.is_empty() || account.is_empty() {
        return false;
    }
    let prefix = format!("arn:{partition}:sts::{account}:assumed-role/{name}/");
    caller
        .strip_prefix(&prefix)
        .is_some_and(|session| !session.is_empty() && !session.contains('/'))
}

fn load_or_create_key(path: &Path) -> std::io::Result<SecretString> {
    use std::io::Write as _;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim();
            if key.len() < 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is too short to be a key", path.display()),
                ));
            }
            return Ok(SecretString::from(key.to_owned()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(key.as_bytes())?;
            file.sync_all()?;
            Ok(SecretString::from(key))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::grant_matches;

    #[test]
    fn role_grants_cover_their_sessions_only() {
        let role = "arn:aws:iam::123456789012:role/jobs/nightly-job";
        assert!(grant_matches(
            role,
            "arn:aws:sts::123456789012:assumed-role/nightly-job/s-1"
        ));
        assert!(grant_matches(
            "arn:aws:iam::123456789012:user/ops",
            "arn:aws:iam::123456789012:user/ops"
        ));
        assert!(
            !grant_matches(
                role,
                "arn:aws:sts::123456789012:assumed-role/nightly-job-2/s-1"
            ),
            "another role"
        );
        assert!(
            !grant_matches(
                role,
                "arn:aws:sts::999999999999:assumed-role/nightly-job/s-1"
            ),
            "another account"
        );
        assert!(
            !grant_matches(role, "arn:aws:sts::123456789012:assumed-role/nightly-job/"),
            "no session"
        );
        assert!(!grant_matches(
            role,
            "arn:aws:iam::123456789012:role/jobs/nightly-job-x"
        ));
        assert!(!grant_matches(
            "arn:aws:iam::123456789012:user/ops",
            "arn:aws:sts::123456789012:assumed-role/ops/s"
        ));
    }
}
