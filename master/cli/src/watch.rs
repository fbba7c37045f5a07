//! `bramble get KIND [NAME] -w|--watch-only`: the list, then a row (or a JSON line) per change,
//! from the store's watch. After a lost connection (a master restart) it reconnects and resumes
//! after the last revision it printed, so no change is printed twice and none is lost; if that
//! revision was compacted away, it lists again and prints only what differs from what it showed
//! (deletions included).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use bramble_client::doc;
use bramble_wire::msg::{ErrorCode, RequestBody, ResponseBody, WatchEvent};
use bramble_wire::objects::{Kind, Object};

use super::{Client, ClientError, Output, table};

/// What to watch and how to print it.
#[derive(Debug)]
pub struct Watch {
    /// Kind.
    pub kind: Kind,
    /// One object's name.
    pub name: Option<String>,
    /// Namespace; `None`: all.
    pub namespace: Option<String>,
    /// Label selector.
    pub selector: String,
    /// Table, wide or json.
    pub output: Output,
    /// Print the list first (`-w`), or only changes (`--watch-only`).
    pub list_first: bool,
    /// Table rows without the header.
    pub no_headers: bool,
    /// Show secret values.
    pub reveal: bool,
}

/// One printed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// First seen.
    Added,
    /// Seen before.
    Modified,
    /// Gone.
    Deleted,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// What the watcher has shown: (namespace, name) → revision, and the last store revision seen.
#[derive(Debug, Default)]
pub struct Seen {
    objects: BTreeMap<(String, String), u64>,
    /// Revision to resume after.
    pub revision: u64,
}

fn key(o: &Object) -> (String, String) {
    (o.meta().namespace.clone(), o.meta().name.clone())
}

impl Seen {
    /// The change `o` (put at `revision`) is, or `None` if it was already shown (a replay after
    /// a reconnect).
    pub fn put(&mut self, o: &Object, revision: u64) -> Option<Change> {
        if revision <= self.revision && self.revision != 0 {
            return None;
        }
        self.revision = self.revision.max(revision);
        match self.objects.insert(key(o), o.meta().revision) {
            None => Some(Change::Added),
            Some(r) if r == o.meta().revision => None,
            Some(_) => Some(Change::Modified),
        }
    }

    /// The delete of `o` at `revision`, or `None` if already shown or never shown.
    pub fn delete(&mut self, o: &Object, revision: u64) -> Option<Change> {
        if revision <= self.revision && self.revision != 0 {
            return None;
        }
        self.revision = self.revision.max(revision);
        self.objects.remove(&key(o)).map(|_| Change::Deleted)
    }

    /// A change at `revision` to an object outside the view: forgotten, the revision passed.
    pub fn skip(&mut self, o: &Object, revision: u64) {
        self.objects.remove(&key(o));
        self.revision = self.revision.max(revision);
    }

    /// A fresh list (after a compaction): the changes against what was shown, in order:
    /// deletions first, then puts.
    pub fn relist(&mut self, items: &[Object], revision: u64) -> Vec<(Change, Object)> {
        let mut out = Vec::new();
        let now: BTreeMap<(String, String), &Object> = items.iter().map(|o| (key(o), o)).collect();
        let gone: Vec<(String, String)> = self
            .objects
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.objects.remove(&k);
            let mut o = Object::Namespace(Default::default());
            // Only the name is known of a deletion missed while away.
            o.meta_mut().namespace = k.0;
            o.meta_mut().name = k.1;
            out.push((Change::Deleted, o));
        }
        for o in items {
            match self.objects.insert(key(o), o.meta().revision) {
                None => out.push((Change::Added, o.clone())),
                Some(r) if r != o.meta().revision => out.push((Change::Modified, o.clone())),
                Some(_) => {}
            }
        }
        self.revision = revision;
        out
    }
}

fn matches(w: &Watch, sel: &bramble_server::api::Selector, o: &Object) -> bool {
    w.name.as_ref().is_none_or(|n| &o.meta().name == n) && sel.matches(&o.meta().labels)
}

fn print(w: &Watch, change: Change, o: &Object, header: &mut bool, out: &mut impl Write) {
    match &w.output {
        Output::Json => {
            let line =
                serde_json::json!({"type": change.as_str(), "object": doc::to_doc(o, w.reveal)});
            let _ = writeln!(out, "{line}");
        }
        _ => {
            if change == Change::Deleted && o.kind() != w.kind {
                // A deletion known by name only (missed while disconnected).
                let _ = writeln!(out, "{} deleted", o.meta().name);
            } else {
                let text = table::render(
                    w.kind,
                    std::slice::from_ref(o),
                    w.output == Output::Wide,
                    w.namespace.is_none(),
                    bramble_server::api::now_ms(),
                );
                let skip = !*header || w.no_headers;
                *header = false;
                let _ = write!(out, "{}", table::skip_header(&text, skip));
            }
        }
    }
    let _ = out.flush();
}

async fn list(c: &mut Client, w: &Watch) -> Result<(Vec<Object>, u64), ClientError> {
    match c
        .call(RequestBody::List {
            kind: w.kind,
            namespace: w.namespace.clone(),
            selector: w.selector.clone(),
        })
        .await?
    {
        ResponseBody::List { items, revision } => Ok((items, revision)),
        _ => Ok((Vec::new(), 0)),
    }
}

/// Runs the watch until interrupted (or the master refuses it).
pub async fn run(server: &str, token: &str, w: Watch) -> Result<(), ClientError> {
    let sel = bramble_server::api::Selector::parse(&w.selector).map_err(super::usage)?;
    let mut out = std::io::stdout().lock();
    let mut seen = Seen::default();
    let mut header = true;
    let mut c = Client::connect(server, token).await?;
    let (items, rev) = list(&mut c, &w).await?;
    for o in items.iter().filter(|o| matches(&w, &sel, o)) {
        seen.put(o, 0);
        if w.list_first {
            print(&w, Change::Added, o, &mut header, &mut out);
        }
    }
    seen.revision = rev;
    let mut client = Some(c);
    loop {
        let mut c = match client.take() {
            Some(c) => c,
            None => {
                // Reconnect (the master restarted, or the network went): every half second.
                smol::Timer::after(Duration::from_millis(500)).await;
                match Client::connect(server, token).await {
                    Ok(c) => c,
                    Err(ClientError::Connect { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let id = match c
            .start(RequestBody::Watch {
                kind: w.kind,
                namespace: w.namespace.clone(),
                from_revision: seen.revision,
            })
            .await
        {
            Ok(id) => id,
            Err(ClientError::Connect { .. }) => continue,
            Err(e) => return Err(e),
        };
        loop {
            let r = match c.next().await {
                Ok(r) => r,
                Err(ClientError::Connect { .. }) => break,
                Err(e) => return Err(e),
            };
            if r.id != id {
                continue;
            }
            match r.body {
                ResponseBody::Event { revision, event } => {
                    let (WatchEvent::Put(o) | WatchEvent::Deleted(o)) = &event;
                    if !matches(&w, &sel, o) {
                        // Not (or no longer: its labels changed) in the view.
                        seen.skip(o, revision);
                        continue;
                    }
                    let change = match &event {
                        WatchEvent::Put(o) => seen.put(o, revision),
                        WatchEvent::Deleted(o) => seen.delete(o, revision),
                    };
                    if let Some(ch) = change {
                        print(&w, ch, o, &mut header, &mut out);
                    }
                }
                ResponseBody::Error(e) if e.code == ErrorCode::Compacted => {
                    // Too far behind: list again and show what differs.
                    let (items, rev) = list(&mut c, &w).await?;
                    let items: Vec<Object> =
                        items.into_iter().filter(|o| matches(&w, &sel, o)).collect();
                    for (ch, o) in seen.relist(&items, rev) {
                        print(&w, ch, &o, &mut header, &mut out);
                    }
                    client = Some(c);
                    break;
                }
                ResponseBody::Error(e) => return Err(ClientError::Api(e)),
                ResponseBody::End => return Ok(()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rev: u64) -> Object {
        let mut o = Object::Pod(Default::default());
        o.meta_mut().name = name.into();
        o.meta_mut().namespace = "default".into();
        o.meta_mut().revision = rev;
        o
    }

    #[test]
    fn replays_after_a_reconnect_are_not_printed_twice() {
        let mut s = Seen::default();
        assert_eq!(s.put(&pod("a", 3), 0), Some(Change::Added));
        s.revision = 3;
        assert_eq!(s.put(&pod("a", 5), 5), Some(Change::Modified));
        assert_eq!(s.put(&pod("b", 6), 6), Some(Change::Added));
        // The resumed watch replays from an older revision: nothing shown again.
        assert_eq!(s.put(&pod("a", 5), 5), None);
        assert_eq!(s.put(&pod("b", 6), 6), None);
        assert_eq!(s.delete(&pod("a", 7), 7), Some(Change::Deleted));
        assert_eq!(s.delete(&pod("a", 7), 7), None);
        assert_eq!(s.revision, 7);
    }

    #[test]
    fn a_relist_shows_only_what_differs() {
        let mut s = Seen::default();
        s.put(&pod("a", 1), 1);
        s.put(&pod("b", 2), 2);
        s.put(&pod("c", 3), 3);
        let changes = s.relist(&[pod("a", 1), pod("c", 9), pod("d", 10)], 12);
        let got: Vec<(Change, String)> = changes
            .into_iter()
            .map(|(c, o)| (c, o.meta().name.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (Change::Deleted, "b".to_string()),
                (Change::Modified, "c".to_string()),
                (Change::Added, "d".to_string())
            ]
        );
        assert_eq!(s.revision, 12);
    }
}
