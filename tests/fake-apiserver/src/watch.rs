//! Watch streams: newline-delimited JSON events, replayed from the kept
//! history and then live, ending at `timeoutSeconds` with a bookmark.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::http::{Shared, json_response};
use crate::resources::ResourceInfo;
use crate::status::ApiError;
use crate::store::{Event, EventType, Filter, res_index};

/// The real server picks a random timeout in [30m, 60m]; 30m is enough.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("JSON values serialize");
    v.push(b'\n');
    v.into()
}

fn bookmark(res: &ResourceInfo, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

/// What a stored event looks like to a watcher with `filter`: selectors
/// turn a MODIFIED into ADDED or DELETED when the object enters or leaves
/// the selection, as the watch cache does.
fn view(ev: &Event, res: usize, filter: &Filter) -> Option<(&'static str, Value)> {
    if ev.res != res {
        return None;
    }
    let now = filter.matches(&ev.namespace, &ev.object);
    let before = ev
        .prev
        .as_ref()
        .is_some_and(|p| filter.matches(&ev.namespace, p));
    match ev.kind {
        EventType::Modified if now && !before && ev.prev.is_some() => {
            Some(("ADDED", ev.object.clone()))
        }
        EventType::Modified if !now && before => {
            let mut gone = ev.prev.clone().unwrap_or_default();
            gone["metadata"]["resourceVersion"] = ev.rv.to_string().into();
            Some(("DELETED", gone))
        }
        _ if now => Some((ev.kind.as_str(), ev.object.clone())),
        _ => None,
    }
}

struct State {
    pending: std::collections::VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<Event>>,
    res: &'static ResourceInfo,
    idx: usize,
    filter: Filter,
    last_rv: u64,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    shared: Arc<Shared>,
    done: bool,
}

/// Starts a watch; errors before streaming are ordinary error responses.
pub(crate) fn start(
    shared: Arc<Shared>,
    res: &'static ResourceInfo,
    filter: Filter,
    params: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let bookmarks = matches!(
        params.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let send_initial = matches!(
        params.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = match params.get("timeoutSeconds") {
        Some(s) if !s.is_empty() => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        _ => DEFAULT_TIMEOUT,
    };
    let rv_param = params.get("resourceVersion").cloned().unwrap_or_default();
    if send_initial
        && params.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
    {
        return Err(ApiError::new(
            422,
            "Invalid",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let idx = res_index(res);
    let mut pending = std::collections::VecDeque::new();
    let store = shared.store.lock().expect("store lock");
    // Subscribe under the lock: no event falls between replay and live.
    let rx = store.tx.subscribe();
    let current = store.current_rv();
    let last_rv;
    if rv_param.is_empty() || rv_param == "0" || send_initial {
        // "Any" resourceVersion: the current state as ADDED events.
        for (_, obj) in store.snapshot(res, &filter) {
            pending.push_back(line("ADDED", &obj));
        }
        if send_initial && bookmarks {
            pending.push_back(line("BOOKMARK", &bookmark(res, current, true)));
        }
        last_rv = current;
    } else {
        let from: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        match store.events_since(idx, from) {
            Some(events) => {
                for ev in &events {
                    if let Some((kind, obj)) = view(ev, idx, &filter) {
                        pending.push_back(line(kind, &obj));
                    }
                }
                last_rv = current.max(from);
            }
            None => {
                // Like the real server: 200, then one ERROR event.
                let e = ApiError::expired(format!(
                    "too old resource version: {from} ({})",
                    store.compacted_rv() + 1
                ));
                pending.push_back(line("ERROR", &e.to_status()));
                drop(store);
                let body = Body::from_stream(futures::stream::iter(
                    pending.into_iter().map(Ok::<_, Infallible>),
                ));
                return Ok(stream_response(body));
            }
        }
    }
    drop(store);
    let state = State {
        pending,
        rx,
        res,
        idx,
        filter,
        last_rv,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        shared,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(b), st));
            }
            if st.done {
                return None;
            }
            tokio::select! {
                ev = st.rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= st.last_rv {
                            continue;
                        }
                        st.last_rv = ev.rv;
                        if let Some((kind, obj)) = view(&ev, st.idx, &st.filter) {
                            st.pending.push_back(line(kind, &obj));
                        }
                    }
                    // A watcher too slow for the buffer is closed; clients
                    // re-watch from their last resourceVersion.
                    Err(_) => st.done = true,
                },
                _ = tokio::time::sleep_until(st.deadline) => {
                    if st.bookmarks {
                        let rv = st.shared.store.lock().expect("store lock").current_rv().max(st.last_rv);
                        st.pending.push_back(line("BOOKMARK", &bookmark(st.res, rv, false)));
                    }
                    st.done = true;
                }
            }
        }
    });
    Ok(stream_response(Body::from_stream(stream)))
}

fn stream_response(body: Body) -> Response<Body> {
    let mut r = json_response(200, &Value::Null);
    *r.body_mut() = body;
    r
}
