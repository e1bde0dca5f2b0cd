//! Requests to one registry endpoint for one repository, answering
//! authentication challenges: a 401 with `WWW-Authenticate: Bearer …` gets a
//! token from the realm (anonymously, or with the host's credentials) and the
//! request is retried once; `Basic` gets the host's credentials. Tokens are
//! cached per host and scope for as long as the token server says (a minute
//! when it does not say).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};

use super::RemoteError;
use crate::image::auth::{Challenge, Credential, TokenResponse, parse_challenge};
use crate::image::hosts::Endpoint;

const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// How to authorize requests to one host for one scope, once learned.
#[derive(Clone)]
enum Authorization {
    Bearer { token: String, expires: Instant },
    Basic,
}

/// Host, scope, and the user the token was issued to (empty: anonymous),
/// so pulls with different credentials never share a token.
type CacheKey = (String, String, String);

/// Tokens and auth schemes learned from challenges, shared by every pull of
/// one [`super::Puller`].
#[derive(Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<CacheKey, Authorization>>,
}

impl AuthCache {
    fn get(&self, key: &CacheKey) -> Option<Authorization> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key)? {
            Authorization::Bearer { expires, .. } if *expires <= Instant::now() => None,
            other => Some(other.clone()),
        }
    }

    fn put(&self, key: CacheKey, value: Authorization) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }
}

/// One endpoint, one repository, with the endpoint's client and credentials.
pub struct Session<'a> {
    pub endpoint: Endpoint,
    pub repository: String,
    client: reqwest::Client,
    credential: Option<Credential>,
    cache: &'a AuthCache,
}

impl<'a> Session<'a> {
    pub fn new(
        endpoint: Endpoint,
        repository: &str,
        client: reqwest::Client,
        credential: Option<Credential>,
        cache: &'a AuthCache,
    ) -> Self {
        Self {
            endpoint,
            repository: repository.to_owned(),
            client,
            credential,
            cache,
        }
    }

    /// The name of this endpoint in messages.
    pub fn name(&self) -> String {
        let role = if self.endpoint.is_server {
            "server"
        } else {
            "mirror"
        };
        format!("{} ({role})", self.endpoint.display_name())
    }

    fn cache_key(&self) -> CacheKey {
        (
            self.endpoint.authority().to_owned(),
            format!("repository:{}:pull", self.repository),
            self.credential
                .as_ref()
                .map(|c| c.username.clone())
                .unwrap_or_default(),
        )
    }

    /// GETs `/v2/<repository>/<kind>/<reference>` with `headers`, answering
    /// one auth challenge. Returns the response whatever its status, except
    /// that an unanswerable 401 is an error.
    pub async fn get(
        &self,
        kind: &str,
        reference: &str,
        headers: HeaderMap,
    ) -> Result<Response, RemoteError> {
        let url = self.endpoint.url(&self.repository, kind, reference);
        let key = self.cache_key();
        let known = self.cache.get(&key);
        let response = self.send(&url, &headers, known.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(challenge) = challenge else {
            return Err(RemoteError::Unauthorized {
                url,
                reason: "401 without a WWW-Authenticate challenge".to_owned(),
            });
        };
        let authorization =
            match parse_challenge(&challenge).map_err(|err| RemoteError::Unauthorized {
                url: url.clone(),
                reason: err.to_string(),
            })? {
                Challenge::Basic => {
                    if self.credential.is_none() {
                        return Err(self.no_credentials(&url));
                    }
                    Authorization::Basic
                }
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                } => {
                    let scope = scope.unwrap_or_else(|| key.1.clone());
                    self.fetch_token(&url, &realm, service.as_deref(), &scope)
                        .await?
                }
            };
        if known.is_some() {
            // Refused with what worked before: the token or password is stale.
            tracing::debug!(url, "registry refused cached authorization; retrying");
        }
        let response = self.send(&url, &headers, Some(&authorization)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(match &self.credential {
                None => self.no_credentials(&url),
                Some(credential) => RemoteError::Unauthorized {
                    url,
                    reason: format!(
                        "the registry refused the credentials of user {:?}",
                        credential.username
                    ),
                },
            });
        }
        self.cache.put(key, authorization);
        Ok(response)
    }

    fn no_credentials(&self, url: &str) -> RemoteError {
        RemoteError::Unauthorized {
            url: url.to_owned(),
            reason: format!(
                "the registry requires credentials and none are configured for {} \
                 (add it to the auth file or an imagePullSecret)",
                self.endpoint.authority()
            ),
        }
    }

    async fn send(
        &self,
        url: &str,
        headers: &HeaderMap,
        authorization: Option<&Authorization>,
    ) -> Result<Response, RemoteError> {
        let mut request = self.client.get(url).headers(headers.clone());
        match authorization {
            Some(Authorization::Bearer { token, .. }) => request = request.bearer_auth(token),
            Some(Authorization::Basic) => {
                if let Some(credential) = &self.credential {
                    request = request.basic_auth(&credential.username, Some(&credential.password));
                }
            }
            None => {}
        }
        request
            .send()
            .await
            .map_err(|err| RemoteError::http(url, err))
    }

    async fn fetch_token(
        &self,
        url: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Authorization, RemoteError> {
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.client.get(realm).query(&query);
        if let Some(credential) = &self.credential {
            request = request.basic_auth(&credential.username, Some(&credential.password));
        }
        let fail = |reason: String| RemoteError::Unauthorized {
            url: url.to_owned(),
            reason: format!("getting a token from {realm}: {reason}"),
        };
        let response = request
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .send()
            .await
            .map_err(|err| fail(super::error_chain(&err)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|err| fail(super::error_chain(&err)))?;
        let lifetime = body
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let token = body
            .into_token()
            .ok_or_else(|| fail("the answer holds no token".to_owned()))?;
        // Renew a little early, so a token does not expire mid-request.
        let expires = Instant::now() + lifetime.saturating_sub(Duration::from_secs(5));
        Ok(Authorization::Bearer { token, expires })
    }
}
