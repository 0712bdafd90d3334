//! The registry's catalog (`GET /v2/_catalog`), page by page as its `Link` headers lead.

use super::{read_limited, Client};
use crate::{Error, Result};

/// Repositories asked for per page (the distribution registry's default maximum is 1000).
const PAGE: usize = 100;
/// A stop for a registry whose `Link` never ends.
const MAX_PAGES: usize = 10_000;

impl Client {
    /// Every repository name in the registry's catalog.
    pub fn catalog(&self) -> Result<Vec<String>> {
        let mut url = format!("{}/v2/_catalog?n={PAGE}", self.base);
        let mut names = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.get(&url, None, 0).map_err(|source| Error::Catalog {
                domain: self.domain.clone(),
                source,
            })?;
            let next = resp.header("Link").and_then(next_link).map(str::to_string);
            let body = read_limited(resp, 64 << 20).map_err(|source| Error::CatalogRead {
                domain: self.domain.clone(),
                source,
            })?;
            let page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|source| Error::CatalogJson {
                    domain: self.domain.clone(),
                    source,
                })?;
            names.extend(
                page.get("repositories")
                    .and_then(|r| r.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_string)),
            );
            match next {
                Some(link) if link.starts_with("http://") || link.starts_with("https://") => {
                    url = link
                }
                Some(link) => url = format!("{}{link}", self.base),
                None => return Ok(names),
            }
        }
        Ok(names)
    }
}

/// The target of the `rel="next"` link in a `Link` header (RFC 8288):
/// `</v2/_catalog?last=b&n=100>; rel="next"`.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=100>; rel="next""#),
            Some("/v2/_catalog?last=b&n=100")
        );
        assert_eq!(
            next_link(r#"<https://x/a>; rel="prev", <https://x/b>; rel=next"#),
            Some("https://x/b")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
