//! The SMS gateway and the alert webhook over HTTP (reqwest, rustls with the system's CA
//! certificates; no redirects are followed, so a request and its headers go only where the
//! settings say).
//!
//! A 2xx answer is delivery. 408 and 429 and every 5xx, and failures to connect or to get
//! an answer within 10 s, are worth another attempt; any other 4xx means the gateway will
//! never take this request, so it fails at once. Error texts carry the host and the status,
//! never the URL's path or query (they may hold an API key) nor the answer's body.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroizing;

use super::SendError;
use super::settings::HttpMethod;

/// How long one request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The client every gateway and webhook request goes through.
///
/// # Errors
/// The TLS back end cannot be set up.
pub(crate) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tikfleet-controller/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One request.
pub(crate) struct Request<'a> {
    /// `POST`, `PUT` or `GET`.
    pub method: HttpMethod,
    /// Where.
    pub url: &'a str,
    /// Headers (opened secrets).
    pub headers: BTreeMap<String, Zeroizing<String>>,
    /// The body (`GET`: the query string).
    pub body: &'a str,
    /// The body's content type.
    pub content_type: &'a str,
}

/// Sends `req`.
///
/// # Errors
/// See the module documentation for which failures are permanent.
pub(crate) async fn send(client: &reqwest::Client, req: Request<'_>) -> Result<(), SendError> {
    let host = crate::db::notify::url_host(req.url);
    let mut url = reqwest::Url::parse(req.url)
        .map_err(|_| SendError::permanent(format!("the URL for {host} is invalid")))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SendError::permanent(format!("header name {name:?} is invalid")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| SendError::permanent(format!("the value of header {name} is invalid")))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let builder = match req.method {
        HttpMethod::Get => {
            if !req.body.is_empty() {
                let query = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{}", req.body),
                    _ => req.body.to_owned(),
                };
                url.set_query(Some(&query));
            }
            client.get(url)
        }
        HttpMethod::Post | HttpMethod::Put => {
            let content_type = HeaderValue::from_str(req.content_type).map_err(|_| {
                SendError::permanent(format!("content type {:?} is invalid", req.content_type))
            })?;
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, content_type);
            }
            let b = if req.method == HttpMethod::Post {
                client.post(url)
            } else {
                client.put(url)
            };
            b.body(req.body.to_owned())
        }
    };
    let answer = builder.headers(headers).send().await.map_err(|e| {
        let e = e.without_url();
        SendError::transient(format!("{host}: {}", super::chain(&e)))
    })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let text = format!("{host} answered {status}");
    let code = status.as_u16();
    if status.is_client_error() && code != 408 && code != 429 {
        Err(SendError::permanent(text))
    } else {
        Err(SendError::transient(text))
    }
}
