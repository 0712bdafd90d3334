//! `search`: a registry's repositories whose name contains a term. The default registry is
//! asked through Docker Hub's search API (`/v1/search` on index.docker.io, with stars and
//! descriptions); any other through its catalog (`/v2/_catalog`), which has names only.

use std::time::Duration;

use serde::Deserialize;

use crate::reference::{Reference, DEFAULT_DOMAIN};
use crate::registry::auth::AuthFile;
use crate::registry::{read_limited, Client, HttpError};
use crate::{Error, Result};

/// Docker Hub's search endpoint.
const HUB_SEARCH: &str = "https://index.docker.io/v1/search";

/// One row of `search`, with docker's field names.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SearchResult {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub star_count: u64,
    #[serde(default)]
    pub is_official: bool,
    #[serde(default)]
    pub is_automated: bool,
}

/// Splits `[REGISTRY/]TERM` as docker does: the part before the first `/` is a registry when
/// it has a `.` or a `:` or is `localhost`; otherwise the whole is a term for Docker Hub.
pub fn split_term(query: &str) -> (&str, &str) {
    match query.split_once('/') {
        Some((host, term)) if host.contains(['.', ':']) || host == "localhost" => (host, term),
        _ => (DEFAULT_DOMAIN, query),
    }
}

/// Searches; at most `limit` results.
pub fn search(
    auth: &AuthFile,
    query: &str,
    limit: usize,
    insecure: bool,
) -> Result<Vec<SearchResult>> {
    let (domain, term) = split_term(query);
    if term.contains(char::is_whitespace) {
        return Err(Error::SearchTerm(query.to_string()));
    }
    if domain == DEFAULT_DOMAIN || domain == "index.docker.io" {
        return hub_search(term, limit);
    }
    // The registry's normalized name (a domain alone parses as a reference's domain).
    let domain = Reference::parse(&format!("{domain}/x"))
        .map_err(|_| Error::SearchTerm(query.to_string()))?
        .domain;
    let client = Client::for_repo(&domain, &domain, "", insecure, auth.get(&domain)?)?;
    let term = term.to_lowercase();
    Ok(client
        .catalog()?
        .into_iter()
        .filter(|name| name.contains(&term))
        .take(limit)
        .map(|name| SearchResult {
            name: format!("{domain}/{name}"),
            description: String::new(),
            star_count: 0,
            is_official: false,
            is_automated: false,
        })
        .collect())
}

/// The URL of Docker Hub's search for `term`.
pub fn hub_search_url(term: &str, limit: usize) -> String {
    format!(
        "{HUB_SEARCH}?q={}&n={limit}",
        crate::registry::urlencode(term)
    )
}

fn hub_search(term: &str, limit: usize) -> Result<Vec<SearchResult>> {
    let url = hub_search_url(term, limit);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build();
    let resp = agent.get(&url).call().map_err(|e| Error::HubSearch {
        url: url.clone(),
        source: match e {
            ureq::Error::Status(status, resp) => HttpError {
                status,
                message: crate::registry::format_error_body(
                    &read_limited(resp, 64 * 1024).unwrap_or_default(),
                ),
            },
            ureq::Error::Transport(t) => HttpError {
                status: 0,
                message: t.to_string(),
            },
        },
    })?;
    let body = read_limited(resp, 16 << 20).map_err(|e| Error::HubSearch {
        url: url.clone(),
        source: HttpError {
            status: 0,
            message: e.to_string(),
        },
    })?;
    let mut results = parse_hub_results(&url, &body)?;
    results.truncate(limit);
    Ok(results)
}

/// Docker Hub's answer: `{"num_results": N, "query": "…", "results": [{"name": …}]}`.
pub fn parse_hub_results(url: &str, body: &[u8]) -> Result<Vec<SearchResult>> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        results: Vec<SearchResult>,
    }
    serde_json::from_slice::<Page>(body)
        .map(|p| p.results)
        .map_err(|source| Error::HubSearchJson {
            url: url.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split_like_docker() {
        assert_eq!(split_term("busybox"), ("docker.io", "busybox"));
        assert_eq!(split_term("user/app"), ("docker.io", "user/app"));
        assert_eq!(split_term("127.0.0.1:5000/bus"), ("127.0.0.1:5000", "bus"));
        assert_eq!(split_term("localhost/x"), ("localhost", "x"));
        assert_eq!(split_term("quay.io/"), ("quay.io", ""));
    }

    #[test]
    fn hub_url_and_results() {
        assert_eq!(
            hub_search_url("busy box", 25),
            "https://index.docker.io/v1/search?q=busy%20box&n=25"
        );
        let body = br#"{"num_results":2,"query":"busybox","page":1,"results":[
            {"name":"busybox","description":"Busybox base image.","star_count":3300,
             "is_official":true,"is_automated":false},
            {"name":"radial/busyboxplus","description":"Full-chain busybox","star_count":55,
             "is_automated":true}]}"#;
        let r = parse_hub_results("u", body).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "busybox");
        assert_eq!(r[0].star_count, 3300);
        assert!(r[0].is_official);
        assert!(!r[1].is_official && r[1].is_automated);
        let e = parse_hub_results("u", b"<html>").unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
    }
}
