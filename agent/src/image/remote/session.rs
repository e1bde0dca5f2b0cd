//! Requests to one registry endpoint for one repository, answering
//! authentication challenges: a 401 with `WWW-Authenticate: Bearer …` gets a
//! token from the realm (anonymously, or with the host's credentials) and the
//! request is retried once; `Basic` gets the host's credentials. Tokens are
//! cached per host and scope for as long as the token server says (a minute
//! when it does not say).
//!
//! What goes where: the endpoint's configured headers only to its own
//! origin (a token realm or redirect target elsewhere never sees them); its
//! credentials only to it and to the token realm it names (never over plain
//! http when the registry is https); redirects are followed hop by hop
//! (`request.rs`). Anything the registry sends back is read with a bound
//! (`body.rs`), and error bodies are scrubbed of the session's secrets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode, Url};

use super::RemoteError;
use super::body::{self, MAX_TOKEN_BYTES};
use super::redact::Redactor;
use super::request::{self, ForOrigin, Get, shown};
use crate::image::auth::{self, Challenge, Credential, TokenResponse, parse_challenge};
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
    /// The endpoint's scheme, host and port: where its headers may go.
    origin: Url,
    /// The endpoint's configured `header` table.
    headers: HeaderMap,
    stall: Duration,
    /// What this session sent that must not come back in a message.
    redactor: Mutex<Redactor>,
    /// `[images] max-download-rate`, shared by every download.
    rate: Option<std::sync::Arc<crate::image::rate::RateLimit>>,
}

impl<'a> Session<'a> {
    /// `stall`: how long a response may send nothing before the host is
    /// given up.
    pub fn new(
        endpoint: Endpoint,
        repository: &str,
        client: reqwest::Client,
        credential: Option<Credential>,
        cache: &'a AuthCache,
        stall: Duration,
    ) -> Result<Self, RemoteError> {
        let origin = request::parse_url(&endpoint.origin)?;
        let headers = endpoint.headers()?;
        let redactor = Mutex::new(Redactor::new(credential.as_ref()));
        Ok(Self {
            endpoint,
            repository: repository.to_owned(),
            client,
            credential,
            cache,
            origin,
            headers,
            stall,
            redactor,
            rate: None,
        })
    }

    /// Blob bodies read through this session take their bytes from `rate`.
    pub fn with_rate(
        mut self,
        rate: Option<std::sync::Arc<crate::image::rate::RateLimit>>,
    ) -> Self {
        self.rate = rate;
        self
    }

    pub fn rate(&self) -> Option<&crate::image::rate::RateLimit> {
        self.rate.as_deref()
    }

    /// How long a response may send nothing.
    pub fn stall(&self) -> Duration {
        self.stall
    }

    /// The error for a response with an unexpected status: its URL, status
    /// and an excerpt of its body, with this session's secrets scrubbed.
    pub async fn status_error(&self, response: Response) -> RemoteError {
        let url = shown(response.url());
        let status = response.status();
        let body = body::excerpt(response, self.stall).await;
        let body = self
            .redactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scrub(&body);
        RemoteError::status(&url, status, &body)
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
        if let Some(Authorization::Bearer { token, .. }) = &known {
            self.redactor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(token);
        }
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
                reason: crate::status::chain(&err),
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
        let value = match authorization {
            Some(Authorization::Bearer { token, .. }) => Some(format!("Bearer {token}")),
            Some(Authorization::Basic) => self.credential.as_ref().map(Credential::basic_header),
            None => None,
        };
        let authorization = value.as_deref().and_then(request::authorization);
        request::send(
            &self.client,
            Get {
                url,
                own: headers,
                host: ForOrigin {
                    origin: &self.origin,
                    headers: &self.headers,
                },
                authorization: authorization.as_ref().map(|headers| ForOrigin {
                    origin: &self.origin,
                    headers,
                }),
                head_timeout: self.stall,
            },
        )
        .await
    }

    async fn fetch_token(
        &self,
        url: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Authorization, RemoteError> {
        let fail = |reason: String| RemoteError::Unauthorized {
            url: url.to_owned(),
            reason: format!("getting a token from {realm}: {reason}"),
        };
        let mut realm_url =
            Url::parse(realm).map_err(|err| fail(format!("the realm is not a URL: {err}")))?;
        if self.origin.scheme() == "https" && realm_url.scheme() != "https" {
            return Err(fail(
                "the registry speaks https but names a plain-http token realm; refused, \
                 credentials and tokens would travel unencrypted"
                    .to_owned(),
            ));
        }
        {
            let mut query = realm_url.query_pairs_mut();
            query.append_pair("scope", scope);
            if let Some(service) = service {
                query.append_pair("service", service);
            }
        }
        let mut accept = HeaderMap::new();
        accept.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        // The token protocol sends the credentials to the realm, wherever
        // it is (auth.docker.io for registry-1.docker.io); nothing else of
        // the endpoint's goes there unless it is the same origin.
        let basic = self
            .credential
            .as_ref()
            .and_then(|credential| request::authorization(&credential.basic_header()));
        let response = request::send(
            &self.client,
            Get {
                url: realm_url.as_str(),
                own: &accept,
                host: ForOrigin {
                    origin: &self.origin,
                    headers: &self.headers,
                },
                authorization: basic.as_ref().map(|headers| ForOrigin {
                    origin: &realm_url,
                    headers,
                }),
                head_timeout: self.stall,
            },
        )
        .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        let answer_url = shown(response.url());
        let bytes = body::read_capped(
            response,
            &answer_url,
            "token response",
            MAX_TOKEN_BYTES,
            self.stall,
        )
        .await?;
        // serde's messages quote the input, and this input is a token.
        let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|err| {
            fail(format!(
                "the answer is not a token document ({})",
                auth::json_error_position(&err)
            ))
        })?;
        let lifetime = body
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let token = body
            .into_token()
            .ok_or_else(|| fail("the answer holds no token".to_owned()))?;
        self.redactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(&token);
        // Renew a little early, so a token does not expire mid-request.
        let expires = Instant::now() + lifetime.saturating_sub(Duration::from_secs(5));
        Ok(Authorization::Bearer { token, expires })
    }
}
