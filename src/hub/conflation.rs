//! Conflation of progress-like events: per connection and event key, at most one event per
//! interval (`1 / signalr.conflate_rate`) is sent; a newer one replaces one still waiting, so a
//! slow reader sees the latest progress, never a backlog of stale ones.
//!
//! What each published message is for conflation is decided once, when it is prepared
//! ([`tag`]), and travels with its bytes to every shard:
//! - **progress**: an event named in `signalr.conflate_events` (e.g. `ImageProgress`);
//! - **final**: such an event whose first argument says it is over (`completed: true`, or a
//!   `status` of completed/failed/cancelled, or `isFinal: true`): it is sent at once and the
//!   progress waiting for the same key is dropped, so a final state is never followed by a
//!   stale progress;
//! - **barrier**: any other event to the same recipients (e.g. `ImageGenerationCompleted` to the
//!   task's group): the progress waiting there is sent first, so nothing is reordered behind it.
//!
//! The event key is the event name plus the task: the first argument's `taskId` field, or the
//! first argument itself when it is a string (positional events such as
//! `TaskProgress(taskId, progress)`), together with the recipients (the group, user,
//! connection or everyone).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use quanta::Instant;

use super::actions::Target;
use super::broadcast::PreparedMessage;
use bytes::Bytes;

use crate::protocol::signalr::{Decoded, HubMessage, HubProtocol, Value};

/// Event keys one connection tracks at most; beyond that, events pass unconflated.
const MAX_KEYS: usize = 256;

/// What a message is for conflation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// A progress event: may be delayed and replaced.
    Progress,
    /// The last event of its key: sent at once; the waiting progress is dropped.
    Final,
    /// Another event to the same recipients: the waiting progress goes first.
    Barrier,
}

/// A message's conflation identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The recipients it was published to.
    pub scope: u64,
    /// The event name and task.
    pub key: u64,
    /// What it is.
    pub kind: TagKind,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The recipients' identity, for [`Tag::scope`].
fn scope(target: &Target) -> u64 {
    match target {
        Target::All => hash_of(0u8),
        Target::Group(group) => hash_of((1u8, group)),
        Target::User(user) => hash_of((2u8, user)),
        Target::Connection(id) => hash_of((3u8, id)),
    }
}

/// Whether an event's first argument says its task is over.
fn is_final(first: &Value) -> bool {
    let flag = |name| first.get(name).and_then(Value::as_bool) == Some(true);
    let status = first
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    flag("completed")
        || flag("isFinal")
        || matches!(
            status.as_deref(),
            Some("completed" | "complete" | "succeeded" | "failed" | "cancelled" | "canceled")
        )
}

/// The conflation tag of `message` published to `target`, with `events` the conflated event
/// names (compared ignoring case, as clients match handlers). `None` when conflation is off or
/// the message is not an event.
pub fn tag(target: &Target, message: &HubMessage, events: &[String]) -> Option<Tag> {
    if events.is_empty() {
        return None;
    }
    let HubMessage::Invocation(invocation) = message else {
        return None;
    };
    let scope = scope(target);
    if !events
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&invocation.target))
    {
        return Some(Tag {
            scope,
            key: 0,
            kind: TagKind::Barrier,
        });
    }
    let first = invocation
        .arguments
        .first()
        .and_then(|a| a.to_value().ok())
        .unwrap_or(Value::Null);
    let task = match first.get("taskId") {
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        _ => first.as_str().map(str::to_owned).unwrap_or_default(),
    };
    Some(Tag {
        scope,
        key: hash_of((invocation.target.to_ascii_lowercase(), task)),
        kind: if is_final(&first) {
            TagKind::Final
        } else {
            TagKind::Progress
        },
    })
}

/// [`tag`] for a message that arrives already framed in JSON (from the Redis backplane): the
/// target name is read off the bytes, and only an event named in `events` is decoded (for
/// its task and final state), so other messages, whatever their size, are not parsed per
/// receiving shard.
pub fn tag_framed_json(target: &Target, json: &Bytes, events: &[String]) -> Option<Tag> {
    if events.is_empty() {
        return None;
    }
    if let Some(name) = json_target(json)
        && !events.iter().any(|e| e.eq_ignore_ascii_case(name))
    {
        return Some(Tag {
            scope: scope(target),
            key: 0,
            kind: TagKind::Barrier,
        });
    }
    match HubProtocol::Json.decode(json, usize::MAX) {
        Ok(Decoded::Message(message, _)) => tag(target, &message, events),
        _ => None,
    }
}

/// The target of a JSON invocation as ASP.NET and ringhub write it (`"target":"Name"` before
/// the arguments), or `None` when it is not written that simply (the caller decodes).
fn json_target(json: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"target\":\"";
    let start = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &json[start..];
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

/// One event key's state on a connection.
#[derive(Debug)]
struct Slot {
    scope: u64,
    key: u64,
    /// When the last event of this key was released.
    last_sent: Instant,
    /// The newest event waiting for its turn.
    pending: Option<Arc<PreparedMessage>>,
}

/// A connection's conflation state (allocated when its first progress event arrives).
#[derive(Debug)]
pub struct Conflator {
    interval: Duration,
    slots: Vec<Slot>,
}

impl Conflator {
    /// At most one event per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Vec::new(),
        }
    }

    /// Takes a delivered message: what may be sent now goes to `send`, in order. Returns how
    /// many waiting events were dropped (replaced by a newer progress or ended by a final).
    pub fn offer(
        &mut self,
        message: Arc<PreparedMessage>,
        tag: Tag,
        now: Instant,
        mut send: impl FnMut(Arc<PreparedMessage>),
    ) -> u64 {
        let interval = self.interval;
        match tag.kind {
            TagKind::Barrier => {
                for slot in self.slots.iter_mut().filter(|s| s.scope == tag.scope) {
                    if let Some(waiting) = slot.pending.take() {
                        slot.last_sent = now;
                        send(waiting);
                    }
                }
                send(message);
                0
            }
            TagKind::Final => {
                let position = self
                    .slots
                    .iter()
                    .position(|s| s.scope == tag.scope && s.key == tag.key);
                let dropped = position.map_or(0, |at| {
                    u64::from(self.slots.swap_remove(at).pending.is_some())
                });
                send(message);
                dropped
            }
            TagKind::Progress => {
                if let Some(slot) = self
                    .slots
                    .iter_mut()
                    .find(|s| s.scope == tag.scope && s.key == tag.key)
                {
                    if slot.pending.is_none() && now >= slot.last_sent + interval {
                        slot.last_sent = now;
                        send(message);
                        return 0;
                    }
                    return u64::from(slot.pending.replace(message).is_some());
                }
                // Keys idle for a whole interval need no slot any more.
                self.slots
                    .retain(|s| s.pending.is_some() || now < s.last_sent + interval);
                if self.slots.len() < MAX_KEYS {
                    self.slots.push(Slot {
                        scope: tag.scope,
                        key: tag.key,
                        last_sent: now,
                        pending: None,
                    });
                }
                send(message);
                0
            }
        }
    }

    /// When the next waiting event is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.pending.is_some())
            .map(|s| s.last_sent + self.interval)
            .min()
    }

    /// Releases every waiting event whose turn has come.
    pub fn release_due(&mut self, now: Instant, mut send: impl FnMut(Arc<PreparedMessage>)) {
        let interval = self.interval;
        for slot in &mut self.slots {
            if now >= slot.last_sent + interval
                && let Some(waiting) = slot.pending.take()
            {
                slot.last_sent = now;
                send(waiting);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::actions::event;
    use crate::protocol::signalr::Payload;

    fn progress_event(name: &str, task: &str, percentage: i64, status: &str) -> HubMessage {
        event(
            name,
            vec![Payload::from_value(Value::Map(vec![
                (Value::Str("taskId".into()), Value::Str(task.into())),
                (Value::Str("percentage".into()), Value::Int(percentage)),
                (Value::Str("status".into()), Value::Str(status.into())),
            ]))],
        )
    }

    fn events() -> Vec<String> {
        vec!["ImageProgress".into()]
    }

    fn prepared(message: &HubMessage) -> Arc<PreparedMessage> {
        Arc::new(PreparedMessage::new(message).unwrap())
    }

    #[test]
    fn framed_json_is_tagged_like_the_decoded_message() {
        let group = Target::Group("image-t1".into());
        for message in [
            progress_event("ImageProgress", "t1", 5, "running"),
            progress_event("ImageProgress", "t1", 100, "completed"),
            event("ImageGenerationCompleted", vec![Payload::string("t1")]),
        ] {
            let mut json = bytes::BytesMut::new();
            HubProtocol::Json.encode(&message, &mut json).unwrap();
            assert_eq!(
                tag_framed_json(&group, &json.freeze(), &events()),
                tag(&group, &message, &events())
            );
        }
        assert_eq!(
            json_target(br#"{"type":1,"target":"News","arguments":[]}"#),
            Some("News")
        );
        assert_eq!(json_target(br#"{"type":1,"target": "News"}"#), None);
        assert_eq!(json_target(br#"{"target":"Ne\"ws"}"#), None);
    }

    #[test]
    fn listed_events_are_progress_or_final_and_others_are_barriers() {
        let group = Target::Group("image-t1".into());
        let p = tag(
            &group,
            &progress_event("imageprogress", "t1", 5, "running"),
            &events(),
        );
        assert_eq!(p.map(|t| t.kind), Some(TagKind::Progress));
        let f = tag(
            &group,
            &progress_event("ImageProgress", "t1", 100, "Completed"),
            &events(),
        );
        assert_eq!(f.map(|t| t.kind), Some(TagKind::Final));
        assert_eq!(p.map(|t| t.key), f.map(|t| t.key));
        let other = tag(
            &group,
            &progress_event("ImageProgress", "t2", 5, "running"),
            &events(),
        );
        assert_ne!(p.map(|t| t.key), other.map(|t| t.key));
        let done = tag(
            &group,
            &event("ImageGenerationCompleted", vec![]),
            &events(),
        );
        assert_eq!(done.map(|t| t.kind), Some(TagKind::Barrier));
        assert_eq!(done.map(|t| t.scope), p.map(|t| t.scope));
        assert!(tag(&group, &event("ImageProgress", vec![]), &[]).is_none());
    }

    #[test]
    fn a_burst_sends_the_first_then_only_the_newest_per_interval_and_the_final_at_once() {
        let clock = quanta::Clock::new();
        let start = clock.now();
        let group = Target::Group("image-t1".into());
        let mut conflator = Conflator::new(Duration::from_millis(100));
        let mut sent = Vec::new();
        let mut dropped = 0;
        for i in 0..50 {
            let message = progress_event("ImageProgress", "t1", i, "running");
            let t = tag(&group, &message, &events()).unwrap();
            dropped += conflator.offer(prepared(&message), t, start, |m| sent.push(m));
        }
        assert_eq!(sent.len(), 1, "only the first goes at once");
        assert_eq!(dropped, 48, "one waits, 48 were replaced");
        assert_eq!(
            conflator.next_due(),
            Some(start + Duration::from_millis(100))
        );
        conflator.release_due(start + Duration::from_millis(50), |m| sent.push(m));
        assert_eq!(sent.len(), 1, "not due yet");
        conflator.release_due(start + Duration::from_millis(100), |m| sent.push(m));
        assert_eq!(sent.len(), 2);
        assert_eq!(
            *sent[1],
            *prepared(&progress_event("ImageProgress", "t1", 49, "running"))
        );
        // Another progress waits; the final replaces it and goes at once.
        let later = start + Duration::from_millis(120);
        let message = progress_event("ImageProgress", "t1", 60, "running");
        let t = tag(&group, &message, &events()).unwrap();
        conflator.offer(prepared(&message), t, later, |m| sent.push(m));
        let last = progress_event("ImageProgress", "t1", 100, "completed");
        let t = tag(&group, &last, &events()).unwrap();
        assert_eq!(
            conflator.offer(prepared(&last), t, later, |m| sent.push(m)),
            1
        );
        assert_eq!(*sent[2], *prepared(&last));
        assert_eq!(sent.len(), 3);
        assert_eq!(
            conflator.next_due(),
            None,
            "nothing stale is left to follow the final"
        );
    }

    #[test]
    fn another_event_to_the_same_recipients_flushes_the_waiting_progress_first() {
        let clock = quanta::Clock::new();
        let now = clock.now();
        let group = Target::Group("image-t1".into());
        let mut conflator = Conflator::new(Duration::from_millis(100));
        let mut sent = Vec::new();
        for i in 0..2 {
            let message = progress_event("ImageProgress", "t1", i, "running");
            let t = tag(&group, &message, &events()).unwrap();
            conflator.offer(prepared(&message), t, now, |m| sent.push(m));
        }
        let done = event("ImageGenerationCompleted", vec![Payload::string("t1")]);
        let t = tag(&group, &done, &events()).unwrap();
        conflator.offer(prepared(&done), t, now, |m| sent.push(m));
        assert_eq!(sent.len(), 3);
        assert_eq!(
            *sent[1],
            *prepared(&progress_event("ImageProgress", "t1", 1, "running"))
        );
        assert_eq!(*sent[2], *prepared(&done));
    }
}
