//! What a resuming connection brings in its upgrade URL (`wsu_resume`, `wsu_offsets`), and
//! what it still has to restore.

use std::collections::HashMap;
use std::sync::Arc;

use super::history::{FetchedStream, Position};

/// What a namespace of a resumed session restores.
pub(crate) struct Taken {
    pub(crate) rooms: Vec<Arc<str>>,
    pub(crate) from: Option<Position>,
    pub(crate) fetched: Option<FetchedStream>,
}
use super::store::Saved;

/// The resume request of an upgrade URL.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ResumeQuery {
    pub(crate) token: String,
    pub(crate) offsets: HashMap<String, Position>,
}

/// The first `wsu_resume` and `wsu_offsets` parameters of a query string. `None` without
/// `wsu_resume`. Offsets that do not parse are ignored (those namespaces resume with
/// `recovered: false`, reason `no offset`).
pub(crate) fn parse_query(query: Option<&str>) -> Option<ResumeQuery> {
    let query = query?;
    let mut token = None;
    let mut offsets = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "wsu_resume" if token.is_none() => token = Some(v.to_owned()),
            "wsu_offsets" if offsets.is_none() => offsets = Some(v),
            _ => {}
        }
    }
    let offsets = offsets
        .and_then(percent_decode)
        .and_then(|json| parse_offsets(&json))
        .unwrap_or_default();
    Some(ResumeQuery {
        token: token?,
        offsets,
    })
}

fn parse_offsets(json: &str) -> Option<HashMap<String, Position>> {
    #[derive(serde::Deserialize)]
    struct P {
        epoch: String,
        offset: u64,
    }
    let map: HashMap<String, P> = serde_json::from_str(json).ok()?;
    Some(
        map.into_iter()
            .map(|(ns, p)| {
                (
                    ns,
                    Position {
                        epoch: p.epoch,
                        offset: p.offset,
                    },
                )
            })
            .collect(),
    )
}

/// Decode `%XX` escapes (and `+` as a space); `None` if malformed or not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What a resumed connection still has to restore: per namespace, its rooms and the client's
/// position. Consumed namespace by namespace as the connection joins them again.
#[derive(Default)]
pub(crate) struct Restore {
    namespaces: Vec<(Arc<str>, Vec<Arc<str>>)>,
    offsets: HashMap<String, Position>,
    /// Per namespace, what the engine's stream held after the client's position (a cluster
    /// with streams), read before the namespace is restored.
    fetched: HashMap<String, FetchedStream>,
}

impl std::fmt::Debug for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restore")
            .field("namespaces", &self.namespaces)
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

impl Restore {
    pub(crate) fn new(saved: Saved, offsets: HashMap<String, Position>) -> Restore {
        Restore {
            namespaces: saved.namespaces,
            offsets,
            fetched: HashMap::new(),
        }
    }

    /// Take what is to be restored in `ns`: its rooms, the client's position there, and what
    /// the engine's stream held after it.
    pub(crate) fn take(&mut self, ns: &str) -> Option<Taken> {
        let i = self.namespaces.iter().position(|(n, _)| &**n == ns)?;
        let (_, rooms) = self.namespaces.swap_remove(i);
        Some(Taken {
            rooms,
            from: self.offsets.remove(ns),
            fetched: self.fetched.remove(ns),
        })
    }

    /// The positions to read from the engine before restoring: (namespace, position).
    pub(crate) fn positions(&self) -> Vec<(String, Position)> {
        self.namespaces
            .iter()
            .filter_map(|(n, _)| Some((n.to_string(), self.offsets.get(&**n)?.clone())))
            .collect()
    }

    /// Keep what the engine's stream held after the client's position in `ns`.
    pub(crate) fn set_fetched(&mut self, ns: String, f: FetchedStream) {
        self.fetched.insert(ns, f);
    }

    /// The namespaces not restored yet.
    pub(crate) fn pending(&self) -> Vec<Arc<str>> {
        self.namespaces.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The namespaces not restored yet, with their rooms (kept if this transport ends too).
    pub(crate) fn unrestored(&self) -> &[(Arc<str>, Vec<Arc<str>>)] {
        &self.namespaces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query(None), None);
        assert_eq!(parse_query(Some("a=1")), None);
        let q = parse_query(Some(
            "room=x&wsu_resume=abc.def&wsu_offsets=%7B%22%2Fchat%22%3A%7B%22epoch%22%3A%22e1%22%2C%22offset%22%3A42%7D%7D&wsu_resume=zzz",
        ))
        .unwrap();
        assert_eq!(q.token, "abc.def");
        assert_eq!(
            q.offsets.get("/chat"),
            Some(&Position {
                epoch: "e1".into(),
                offset: 42
            })
        );
        // Bad offsets are ignored, the token is kept.
        let q = parse_query(Some("wsu_resume=t&wsu_offsets=%7Bnot-json")).unwrap();
        assert_eq!((q.token.as_str(), q.offsets.len()), ("t", 0));
        let q = parse_query(Some("wsu_resume=t&wsu_offsets=%zz")).unwrap();
        assert!(q.offsets.is_empty());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%C3%A9").as_deref(), Some("a b cé"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
