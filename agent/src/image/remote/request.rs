//! Sending one GET and following its redirects by hand, deciding per hop
//! what may go along. reqwest's own redirect policy keeps every header but
//! `Authorization` and cookies across hosts, which would hand a mirror's
//! configured headers (often a token) to whatever host it redirects to.
//!
//! - the endpoint's configured headers go only to the endpoint's origin;
//! - an `Authorization` goes only to the origin it was meant for;
//! - a redirect from https to plain http is refused (the request, and what
//!   comes back, would travel in clear);
//! - at most [`MAX_REDIRECTS`] hops;
//! - the response head must arrive within the stall timeout (connecting
//!   included: a host's `dial_timeout` bounds connecting alone, and only
//!   matters when it is shorter).

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, Url};

use super::RemoteError;

/// As many as reqwest's and Go's default policies allow.
const MAX_REDIRECTS: usize = 10;

/// Headers that belong to one origin.
pub(super) struct ForOrigin<'a> {
    pub origin: &'a Url,
    pub headers: &'a HeaderMap,
}

/// One GET: `own` headers go to every hop, `host` and `authorization`
/// only to their origins.
pub(super) struct Get<'a> {
    pub url: &'a str,
    pub own: &'a HeaderMap,
    pub host: ForOrigin<'a>,
    pub authorization: Option<ForOrigin<'a>>,
    pub head_timeout: Duration,
}

/// Whether `a` and `b` have the same scheme, host and port.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `url` for messages: berth's own `ns=` query is kept, any other query
/// (a CDN redirect's signature) is left out.
pub(super) fn shown(url: &Url) -> String {
    let ours = url.query_pairs().all(|(key, _)| key == "ns");
    if ours {
        return url.to_string();
    }
    let mut shown = url.clone();
    shown.set_query(None);
    format!("{shown}?…")
}

pub(super) fn parse_url(url: &str) -> Result<Url, RemoteError> {
    Url::parse(url).map_err(|err| RemoteError::Protocol {
        url: url.to_owned(),
        reason: format!("not a valid URL: {err}"),
    })
}

/// Sends `get` with `client`, following redirects; returns the first
/// response that is not a redirect.
pub(super) async fn send(client: &reqwest::Client, get: Get<'_>) -> Result<Response, RemoteError> {
    let mut url = parse_url(get.url)?;
    let mut hops = 0;
    loop {
        let mut headers = get.own.clone();
        if same_origin(&url, get.host.origin) {
            // Appended, as containerd does: a configured `Accept` adds to
            // berth's own.
            for (name, value) in get.host.headers {
                headers.append(name, value.clone());
            }
        }
        if let Some(authorization) = &get.authorization
            && same_origin(&url, authorization.origin)
        {
            for (name, value) in authorization.headers {
                headers.insert(name, value.clone());
            }
        }
        let sent = client.get(url.clone()).headers(headers).send();
        let response = tokio::time::timeout(get.head_timeout, sent)
            .await
            .map_err(|_| RemoteError::Stalled {
                url: shown(&url),
                awaited: "response",
                after: get.head_timeout,
            })?
            .map_err(|err| RemoteError::http(&shown(&url), err))?;
        let location = response
            .headers()
            .get(header::LOCATION)
            .filter(|_| response.status().is_redirection());
        let Some(location) = location else {
            return Ok(response);
        };
        let refused = |reason: String| RemoteError::Redirect {
            url: shown(&url),
            reason,
        };
        if hops == MAX_REDIRECTS {
            return Err(refused(format!("more than {MAX_REDIRECTS} redirects")));
        }
        hops += 1;
        let next = location
            .to_str()
            .ok()
            .and_then(|location| url.join(location).ok())
            .ok_or_else(|| refused("its Location is not a URL".to_owned()))?;
        match (url.scheme(), next.scheme()) {
            (_, "https") | ("http", "http") => {}
            ("https", "http") => {
                return Err(refused(format!(
                    "it leads from https to plain http ({}); refused, the request \
                     and its answer would travel unencrypted",
                    shown(&next)
                )));
            }
            (_, other) => {
                return Err(refused(format!("unsupported scheme {other:?}")));
            }
        }
        tracing::debug!(from = %shown(&url), to = %shown(&next), "following a redirect");
        url = next;
    }
}

/// An `Authorization` header value, kept out of debug output.
pub(super) fn authorization(value: &str) -> Option<HeaderMap> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin(
            &url("https://r.example/v2/a"),
            &url("https://r.example:443/token")
        ));
        assert!(!same_origin(
            &url("https://r.example/v2"),
            &url("http://r.example/v2")
        ));
        assert!(!same_origin(
            &url("http://127.0.0.1:5000/"),
            &url("http://127.0.0.1:5001/")
        ));
        assert!(!same_origin(
            &url("http://127.0.0.1:5000/"),
            &url("http://127.0.0.2:5000/")
        ));
    }

    #[test]
    fn messages_show_berths_ns_query_but_not_a_signed_one() {
        assert_eq!(
            shown(&url("http://m:5000/v2/x/blobs/sha256:00?ns=docker.io")),
            "http://m:5000/v2/x/blobs/sha256:00?ns=docker.io"
        );
        assert_eq!(
            shown(&url(
                "https://cdn/blob?X-Amz-Signature=abc&X-Amz-Credential=k"
            )),
            "https://cdn/blob?…"
        );
    }
}
