//! Kubernetes Events of the controllers (`kubectl describe` shows them), with a
//! compact memory of the recent ones so that a repeat becomes a count, not a
//! new object.
//!
//! Why not kube's `Recorder`: it remembers every Event it sent as a whole
//! object (reference, note, reporter strings, and all of it again in its key)
//! for six minutes, and sweeps that map on every publish. The controller sends
//! two Events per new endpoint (signing Secret created, Ready), so applying
//! 10,000 endpoints kept some 20,000 of them alive: tens of MiB of the
//! controller's peak, and an O(n) sweep per Event. Here a sent Event is
//! remembered by a 64-bit hash of what identifies it, plus the name it got and
//! its count: about a tenth of the memory, swept at most every [`SWEEP_EVERY`].
//!
//! Semantics follow client-go's events.k8s.io recorder: the same Event (same
//! object, type, reason, action, note and reporter) again within [`SERIES_TTL`]
//! is a merge patch of the first one's `series` (count, last observed time).
//! Unlike client-go, the note is part of the identity: a different message
//! under the same reason is news to the reader and gets an Event of its own.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// How long a sent Event is remembered: a repeat within it is counted on it.
/// (kube's and client-go's recorders use the same six minutes.)
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// At most this often, forgotten Events are swept out of the memory.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A hard bound on the memory whatever the rate of Events: past it, the memory
/// starts over. Losing it only means that the next repeat of an Event is a new
/// Event instead of a count.
const MAX_REMEMBERED: usize = 100_000;

/// Normal or Warning, as `kubectl get events` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event to record about an object.
pub struct Note<'a> {
    pub kind: EventType,
    /// Why, in CamelCase (`SecretConflict`).
    pub reason: &'a str,
    /// What the controller did or tried (`Reconcile`, `CreateSecret`).
    pub action: &'a str,
    /// For a human; the Events API caps it at 1 KiB.
    pub note: &'a str,
}

/// What is remembered of a sent Event: enough to count a repeat on it.
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    memory: Mutex<Memory>,
}

struct Memory {
    sent: HashMap<u64, Sent>,
    swept: Instant,
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
            memory: Mutex::new(Memory {
                sent: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Records `ev` about `regarding`: a new Event, or one more of the same.
    pub async fn publish(&self, ev: &Note<'_>, regarding: &ObjectReference) -> kube::Result<()> {
        let note: String = ev.note.chars().take(1000).collect();
        let key = self.key(ev, &note, regarding);
        let now = Instant::now();
        let repeat = self.remembered(key, now);
        if let Some((namespace, name, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            };
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({ "series": series });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, namespace, name, count, now);
                    return Ok(());
                }
                // Deleted meanwhile (Events expire, or someone cleaned up): a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let stamp = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            stamp.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(stamp)),
            type_: Some(ev.kind.as_str().into()),
            reason: Some(ev.reason.into()),
            action: Some(ev.action.into()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, namespace, name, 1, now);
        Ok(())
    }

    /// What identifies an Event for counting repeats, hashed. A collision (one
    /// in about 10^10 at 100,000 remembered Events) would count a repeat on the
    /// wrong Event of this controller: harmless enough for a display aid.
    fn key(&self, ev: &Note<'_>, note: &str, regarding: &ObjectReference) -> u64 {
        let mut h = DefaultHasher::new();
        (
            &regarding.uid,
            &regarding.kind,
            &regarding.namespace,
            &regarding.name,
        )
            .hash(&mut h);
        (ev.kind, ev.reason, ev.action, note, &self.instance).hash(&mut h);
        h.finish()
    }

    /// The sent Event that `key` repeats, if still within the TTL: its place and
    /// its next count.
    fn remembered(&self, key: u64, now: Instant) -> Option<(String, String, i32)> {
        let memory = self.memory.lock().ok()?;
        let sent = memory.sent.get(&key)?;
        (now.duration_since(sent.at) < SERIES_TTL).then(|| {
            (
                sent.namespace.clone(),
                sent.name.clone(),
                sent.count.saturating_add(1),
            )
        })
    }

    fn remember(&self, key: u64, namespace: String, name: String, count: i32, now: Instant) {
        let Ok(mut memory) = self.memory.lock() else {
            return;
        };
        if now.duration_since(memory.swept) >= SWEEP_EVERY {
            memory
                .sent
                .retain(|_, s| now.duration_since(s.at) < SERIES_TTL);
            memory.swept = now;
        }
        if memory.sent.len() >= MAX_REMEMBERED {
            memory.sent.clear();
        }
        // The TTL runs from the last occurrence, as client-go's does, so a
        // steady repeat stays one Event.
        memory.sent.insert(
            key,
            Sent {
                namespace,
                name,
                count,
                at: now,
            },
        );
    }
}
