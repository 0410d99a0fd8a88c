//! One SignalR connection after the WebSocket upgrade: the handshake, the hub messages that
//! follow, keep-alive and client timeout, invocations, streams in both directions.
//!
//! A [`Session`] is the [`WebSocketApp`] of a hub route: it never touches the socket. Every
//! message it produces during one event is encoded into a single WebSocket frame (several hub
//! messages may share a frame; one hub message never spans two), text for JSON and binary for
//! MessagePack.

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use quanta::Instant;

use super::actions::{
    self, BindError, Caller, Concat, Effect, Outcome, Query, StreamSource, UpstreamCall,
};
use super::broadcast::PreparedMessage;
use super::conflation::{Conflator, TagKind};
use super::{HubDefinition, Reply};
use crate::config::SignalRConfig;
use crate::protocol::signalr::handshake::{self, HandshakeError, HandshakeParse};
use crate::protocol::signalr::{
    CancelInvocation, Close, Completion, CompletionOutcome, Decoded, HubMessage, HubProtocol,
    Invocation, StreamItem,
};
use crate::protocol::websocket::{CloseCode, OpCode};
use crate::stats::{self, DropReason};
use crate::transport::outbox::{HEADROOM, Outbox, frame_buffer};
use crate::transport::websocket::{AppClose, DataMessage, WebSocketApp};

/// Invocations waiting for a free slot beyond this close the connection (an invocation flood).
const MAX_WAITING_INVOCATIONS: usize = 1024;

/// Stream items produced per stream each time the socket drains.
const ITEMS_PER_TURN: usize = 64;

/// The hub options a session runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Server Ping interval.
    pub keepalive_interval: Duration,
    /// Silence after the first client Ping that closes the connection.
    pub client_timeout: Duration,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Largest hub message accepted, framing included.
    pub max_message_size: usize,
    /// Methods running at once.
    pub max_parallel_invocations: usize,
    /// Whether error details go to the client.
    pub detailed_errors: bool,
    /// Unacknowledged bytes kept for resending (stateful reconnect); sending waits beyond it.
    pub resend_buffer: usize,
    /// Delivered bytes waiting beyond this close the connection as a slow consumer.
    pub max_outbound: usize,
    /// Sustained invocations per second.
    pub invocation_rate: u32,
    /// Invocations at once above the rate.
    pub invocation_burst: u32,
    /// Conflated events go at most once per this interval per event key.
    pub conflate_interval: Duration,
    /// Groups a connection may be in besides those it was put in when it connected (0: no
    /// limit).
    pub max_groups: usize,
}

impl SessionOptions {
    /// The options configured in `[signalr]`.
    pub fn from_config(config: &SignalRConfig) -> Self {
        Self {
            keepalive_interval: config.keepalive_interval,
            client_timeout: config.client_timeout,
            handshake_timeout: config.handshake_timeout,
            max_message_size: config.max_message_size,
            max_parallel_invocations: config.max_parallel_invocations.get(),
            detailed_errors: config.detailed_errors,
            resend_buffer: config.stateful_reconnect_buffer,
            max_outbound: config.max_outbound,
            invocation_rate: config.invocation_rate,
            invocation_burst: config.invocation_burst,
            conflate_interval: Duration::from_secs(1) / config.conflate_rate.max(1),
            max_groups: config.max_groups_per_connection,
        }
    }
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the handshake until the deadline.
    Handshake { deadline: Instant },
    /// Hub messages flow in this protocol.
    Active { protocol: HubProtocol },
}

/// A server-to-client stream in progress.
#[derive(Debug)]
struct ActiveStream {
    invocation_id: String,
    source: StreamSource,
}

/// A client-to-server stream a method is consuming.
#[derive(Debug)]
struct Upload {
    stream_id: String,
    invocation_id: Option<String>,
    method: String,
    concat: Concat,
}

/// A server-to-client invocation waiting for the client's result.
#[derive(Debug)]
struct PendingResult {
    /// The id sent to the client.
    sent_id: String,
    /// The caller's invocation to complete with the result (if it expects one).
    reply_to: Option<String>,
    /// The hub method that asked (for error texts).
    method: String,
}

/// What a session's invocations leave in progress. Boxed in the session, which only pays for it
/// once a connection streams, uploads, asks its client or queues an invocation.
#[derive(Debug, Default)]
struct Calls {
    /// Invocations waiting for a free slot.
    waiting: VecDeque<(Invocation, Reply)>,
    /// Server-to-client streams.
    streams: Vec<ActiveStream>,
    /// Client-to-server streams.
    uploads: Vec<Upload>,
    /// Invocations of the client waiting for its result.
    pending_results: Vec<PendingResult>,
    /// Numbers the invocations the server sends expecting a result.
    next_result_id: u64,
}

/// Client results other servers wait for: (invocation id, return channel). Boxed in the
/// session, which only pays for it once one is asked.
#[derive(Debug, Default)]
struct RemoteResults(Vec<(String, String)>);

/// One SignalR connection's hub-level state.
#[derive(Debug)]
pub struct Session {
    hub: Rc<HubDefinition>,
    /// Shared with the shard's session slot (one allocation per connection).
    connection_id: Rc<str>,
    /// The virtual key the connection presented, if any.
    key_id: Option<i64>,
    /// Whether the connection's principal is an admin (admin key or admin virtual key).
    admin: bool,
    request_headers: Vec<(String, String)>,
    /// Whether negotiate agreed to stateful reconnect (used if the handshake is v2).
    stateful_negotiated: bool,
    phase: Phase,
    /// Bytes of a hub message (or handshake) not complete yet.
    inbound: BytesMut,
    /// Messages produced during the current event, encoded together at its end.
    outgoing: Vec<HubMessage>,
    next_ping: Instant,
    /// Set after the client's first Ping; moved forward by everything the client sends.
    client_deadline: Option<Instant>,
    running: usize,
    /// Invocations waiting, streams and client results in progress (allocated on the first).
    calls: Option<Box<Calls>>,
    /// Stateful reconnect bookkeeping, allocated when the handshake turns it on.
    stateful: Option<Box<Stateful>>,
    /// Work for the shard produced by actions (groups, publishing).
    effects: Vec<Effect>,
    /// Messages delivered by others (group sends, broadcasts), not written yet.
    mailbox: VecDeque<Queued>,
    /// Bytes held in `mailbox`.
    mailbox_bytes: usize,
    /// The mailbox went over `max_outbound`: the connection is closed at its next wake.
    overflowed: bool,
    /// Group joins complete only once the backplane has subscribed (Redis).
    await_subscriptions: bool,
    /// Client results other servers asked this client for: invocation id → the backplane
    /// channel the answer goes back on (allocated on the first one).
    remote_results: Option<Box<RemoteResults>>,
    /// Progress events waiting for their turn (allocated on the first one).
    conflator: Option<Box<Conflator>>,
    /// Invocation tokens available (token bucket) and when they were last refilled.
    tokens: f64,
    refilled: Instant,
    /// The groups the connection is in: first the ones it was put in when it connected
    /// (`pinned_groups` of them, not counted against `max_groups`), then the others.
    groups: Vec<String>,
    pinned_groups: usize,
}

/// A group join refused: the connection is in `signalr.max_groups_per_connection` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Group limit reached: a connection may be in at most {max} groups.")]
pub struct GroupLimit {
    /// The limit.
    pub max: usize,
}

/// What a hub method can see of its caller's groups: whether joining more fits the limit.
#[derive(Debug, Clone, Copy)]
pub struct GroupRoom<'a> {
    joined: &'a [String],
    counted: usize,
    max: usize,
}

impl GroupRoom<'_> {
    /// Room without limit (tests, callers without a session).
    pub const UNLIMITED: GroupRoom<'static> = GroupRoom {
        joined: &[],
        counted: 0,
        max: 0,
    };

    /// Whether the caller may join every group of `joining` (those it is in already are
    /// free).
    ///
    /// # Errors
    /// [`GroupLimit`] when the new ones would take it past the limit.
    pub fn admits(&self, joining: &[String]) -> Result<(), GroupLimit> {
        if self.max == 0 {
            return Ok(());
        }
        let new = joining
            .iter()
            .enumerate()
            .filter(|(i, g)| !self.joined.contains(g) && !joining[..*i].contains(g))
            .count();
        if new > 0 && self.counted + new > self.max {
            return Err(GroupLimit { max: self.max });
        }
        Ok(())
    }
}

/// What waits in a session's mailbox.
#[derive(Debug)]
enum Queued {
    /// A message delivered by others, framed for each protocol.
    Message(Arc<PreparedMessage>),
    /// The end of a frame whose start a broadcast wrote to the socket directly
    /// ([`Session::take_write_through`]): written before anything else.
    Rest(Bytes),
}

/// Stateful reconnect bookkeeping (HubProtocol.md, "Stateful Reconnect"): both directions
/// count trackable messages from 1; the sender keeps what was not acknowledged.
#[derive(Debug, Default)]
struct Stateful {
    /// Trackable messages sent so far (the last one's sequence id).
    sent: i64,
    /// Sent messages not acknowledged yet, oldest first, with their sequence ids.
    unacked: VecDeque<(i64, Bytes)>,
    /// Bytes held in `unacked`.
    unacked_bytes: usize,
    /// The last trackable message received and processed.
    received: i64,
    /// The sequence id the next trackable message from the client has.
    next_expected: i64,
    /// The highest id acknowledged to the client.
    acked: i64,
    /// When to send the next Ack.
    ack_due: Option<Instant>,
    /// The connection was resumed on a new socket: send Sequence and the unacked messages.
    resume_pending: bool,
}

impl Stateful {
    /// Bookkeeping for a connection that just completed a version 2 handshake.
    fn new() -> Box<Self> {
        Box::new(Self {
            next_expected: 1,
            ..Self::default()
        })
    }

    /// Keeps a trackable message just sent until the client acknowledges it.
    fn track(&mut self, payload: Bytes) {
        self.sent += 1;
        self.unacked_bytes += payload.len();
        self.unacked.push_back((self.sent, payload));
    }
}

/// How long after receiving a trackable message the server acknowledges it (ASP.NET `AckRate`).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

impl Session {
    /// A session for `hub`, started at `now`, before the handshake.
    pub fn new(
        hub: Rc<HubDefinition>,
        connection_id: String,
        request_headers: Vec<(String, String)>,
        stateful_negotiated: bool,
        now: Instant,
    ) -> Self {
        let options = &hub.session;
        let burst = options.invocation_burst;
        let phase = Phase::Handshake {
            deadline: now + options.handshake_timeout,
        };
        let next_ping = now + options.keepalive_interval;
        Self {
            hub,
            connection_id: connection_id.into(),
            key_id: None,
            admin: false,
            request_headers,
            stateful_negotiated,
            phase,
            next_ping,
            inbound: BytesMut::new(),
            outgoing: Vec::new(),
            client_deadline: None,
            running: 0,
            calls: None,
            effects: Vec::new(),
            mailbox: VecDeque::new(),
            mailbox_bytes: 0,
            overflowed: false,
            await_subscriptions: false,
            remote_results: None,
            conflator: None,
            tokens: f64::from(burst),
            refilled: now,
            stateful: None,
            groups: Vec::new(),
            pinned_groups: 0,
        }
    }

    /// The groups the connection is in.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Adds `group` to the connection's groups: `Ok(true)` when it is new, `Ok(false)` when
    /// the connection was in it already. A `pinned` group (one the connection is put in when
    /// it connects) does not count against the limit.
    ///
    /// # Errors
    /// [`GroupLimit`] when a counted group would take the connection past the limit.
    pub fn add_group(&mut self, group: String, pinned: bool) -> Result<bool, GroupLimit> {
        if self.groups.contains(&group) {
            return Ok(false);
        }
        if pinned {
            self.groups.insert(self.pinned_groups, group);
            self.pinned_groups += 1;
            return Ok(true);
        }
        self.group_room().admits(std::slice::from_ref(&group))?;
        self.groups.push(group);
        Ok(true)
    }

    /// Removes `group` from the connection's groups; `true` when it was in it.
    pub fn remove_group(&mut self, group: &str) -> bool {
        let Some(at) = self.groups.iter().position(|g| g == group) else {
            return false;
        };
        // Order kept: the pinned groups stay first.
        self.groups.remove(at);
        if at < self.pinned_groups {
            self.pinned_groups -= 1;
        }
        true
    }

    /// Every group the connection is in, which it leaves (the session ends).
    pub fn take_groups(&mut self) -> Vec<String> {
        self.pinned_groups = 0;
        std::mem::take(&mut self.groups)
    }

    /// What a method can join now.
    fn group_room(&self) -> GroupRoom<'_> {
        GroupRoom {
            joined: &self.groups,
            counted: self.groups.len() - self.pinned_groups,
            max: self.hub.session.max_groups,
        }
    }

    /// Records the virtual key the connection presented.
    pub fn set_key_id(&mut self, key_id: Option<i64>) {
        self.key_id = key_id;
    }

    /// The virtual key the connection presented, if any.
    pub fn key_id(&self) -> Option<i64> {
        self.key_id
    }

    /// Completes an invocation the shard answered ([`Effect::Query`]), then runs what waited
    /// for its slot, and writes what that produced.
    ///
    /// # Errors
    /// [`AppClose`] when a waiting invocation closes the connection.
    pub fn answer(
        &mut self,
        invocation_id: Option<String>,
        outcome: CompletionOutcome,
        outbox: &mut Outbox,
    ) -> Result<(), AppClose> {
        self.running = self.running.saturating_sub(1);
        if let Some(id) = invocation_id {
            self.outgoing.push(completion(id, outcome));
        }
        let result = self.run_waiting();
        self.flush(outbox);
        result
    }

    /// Records that another server (through the Redis backplane) asked this client for a
    /// client result with `invocation_id`: the client's Completion goes back on
    /// `return_channel`.
    pub fn expect_remote_result(&mut self, invocation_id: String, return_channel: String) {
        self.remote_results
            .get_or_insert_with(Default::default)
            .0
            .push((invocation_id, return_channel));
    }

    /// The client results other servers are still waiting for (the session ends: they are
    /// answered with an error).
    pub fn take_remote_results(&mut self) -> Vec<(String, String)> {
        self.remote_results.take().map(|b| b.0).unwrap_or_default()
    }

    /// Makes group joins complete only once the backplane confirms their subscriptions.
    pub fn set_await_subscriptions(&mut self, wait: bool) {
        self.await_subscriptions = wait;
    }

    /// Completes an invocation that ran outside any hook (an upstream call) and frees its
    /// slot. The Completion is written, and invocations waiting for the slot run, at the
    /// connection's next wake ([`WebSocketApp::on_wake`]) or, for a session parked for
    /// stateful reconnect, when its connection resumes.
    pub fn complete_later(&mut self, invocation_id: Option<String>, outcome: CompletionOutcome) {
        self.running = self.running.saturating_sub(1);
        if let Some(id) = invocation_id {
            self.outgoing.push(completion(id, outcome));
        }
    }

    /// The session's calls in progress, allocated on first use.
    fn calls(&mut self) -> &mut Calls {
        self.calls.get_or_insert_with(Box::default)
    }

    /// The server-to-client streams in progress.
    fn streams(&self) -> &[ActiveStream] {
        self.calls.as_ref().map_or(&[], |calls| &calls.streams)
    }

    /// Whether invocation `invocation_id` streams stream key `key` ([`Action::StreamKey`]).
    ///
    /// [`Action::StreamKey`]: super::Action::StreamKey
    pub fn is_streaming(&self, invocation_id: &str, key: &str) -> bool {
        self.streams().iter().any(|s| {
            s.invocation_id == invocation_id
                && matches!(&s.source, StreamSource::Keyed { key: k } if k == key)
        })
    }

    /// Forgets stream `invocation_id`: its end was delivered (the Completion is in the mailbox).
    pub fn end_stream(&mut self, invocation_id: &str) {
        if let Some(calls) = self.calls.as_deref_mut() {
            calls.streams.retain(|s| s.invocation_id != invocation_id);
        }
    }

    /// Records whether the connection's principal is an admin (methods with `admin = true`).
    pub fn set_admin(&mut self, admin: bool) {
        self.admin = admin;
    }

    /// Whether the connection survives a dropped socket (stateful reconnect is in use).
    pub fn is_resumable(&self) -> bool {
        self.stateful.is_some() && matches!(self.phase, Phase::Active { .. })
    }

    /// Prepares the session for a new socket: the next [`WebSocketApp::on_open`] sends
    /// `Sequence` and every unacknowledged message, and timers restart from `now`.
    pub fn resume(&mut self, now: Instant) {
        if let Some(stateful) = self.stateful.as_deref_mut() {
            stateful.resume_pending = true;
        }
        // The end of a frame started on the old socket means nothing on the new one (the
        // message itself is resent from the unacknowledged ones).
        let mut rest_bytes = 0;
        self.mailbox.retain(|queued| match queued {
            Queued::Rest(rest) => {
                rest_bytes += rest.len();
                false
            }
            Queued::Message(_) => true,
        });
        self.mailbox_bytes = self.mailbox_bytes.saturating_sub(rest_bytes);
        self.next_ping = now + self.hub.session.keepalive_interval;
        if self.client_deadline.is_some() {
            self.client_deadline = Some(now + self.hub.session.client_timeout);
        }
    }

    /// Queues a message delivered by someone else; written at the connection's next wake.
    ///
    /// `stalled` says the connection's write has waited for its peer for a while: a queue over
    /// `max_outbound` then marks a slow consumer. A connection that is merely busy
    /// elsewhere on its shard drains its queue at its next turn, however long it grew.
    ///
    /// A progress event may wait or be replaced (conflation); returns how many waiting ones
    /// were dropped.
    pub fn enqueue(&mut self, message: Arc<PreparedMessage>, stalled: bool, now: Instant) -> u64 {
        if self.overflowed {
            stats::local(|s| s.dropped(DropReason::SlowConsumer, 1));
            return 0;
        }
        let Some(tag) = message.conflation() else {
            self.queue(message, stalled);
            return 0;
        };
        if tag.kind == TagKind::Barrier && self.conflator.is_none() {
            self.queue(message, stalled);
            return 0;
        }
        let interval = self.hub.session.conflate_interval;
        let mut conflator = self
            .conflator
            .take()
            .unwrap_or_else(|| Box::new(Conflator::new(interval)));
        let dropped = conflator.offer(message, tag, now, |m| self.queue(m, stalled));
        self.conflator = Some(conflator);
        dropped
    }

    /// Puts a message in the mailbox, watching its size.
    fn queue(&mut self, message: Arc<PreparedMessage>, stalled: bool) {
        if self.overflowed {
            stats::local(|s| s.dropped(DropReason::SlowConsumer, 1));
            return;
        }
        self.mailbox_bytes += message.len();
        self.mailbox.push_back(Queued::Message(message));
        if stalled && self.mailbox_bytes > self.hub.session.max_outbound {
            // A slow consumer: stop holding memory for it; it is closed at its next wake
            // (after the end of a frame already started, so the Close is framed correctly).
            let dropped = self.mailbox.len() as u64;
            stats::local(|s| s.dropped(DropReason::SlowConsumer, dropped));
            self.overflowed = true;
            self.mailbox
                .retain(|queued| matches!(queued, Queued::Rest(_)));
            self.mailbox_bytes = 0;
        }
    }

    /// The frame of `message` for a broadcast to write to this session's socket itself, when
    /// nothing is waiting to be written before it; tracked for stateful reconnect as sent.
    /// `None`: it must go through the mailbox (handshake not done, messages waiting, the
    /// connection overflowed, a progress event to conflate or one waiting for the
    /// session's conflator, or stateful reconnect waiting for Acks).
    pub fn take_write_through(&mut self, message: &PreparedMessage) -> Option<Bytes> {
        let Phase::Active { protocol } = self.phase else {
            return None;
        };
        // As `enqueue`: an event that is not conflated only has to wait behind progress
        // events when some are waiting (every non-conflated event carries a barrier tag).
        let conflated = message
            .conflation()
            .is_some_and(|tag| tag.kind != TagKind::Barrier || self.conflator.is_some());
        if self.overflowed || !self.mailbox.is_empty() || conflated || self.is_send_blocked() {
            return None;
        }
        if message.is_trackable()
            && let Some(stateful) = self.stateful.as_deref_mut()
        {
            stateful.track(message.payload(protocol));
        }
        Some(message.frame(protocol))
    }

    /// Queues the part of a written-through frame the socket did not take, ahead of everything.
    pub fn queue_rest(&mut self, rest: Bytes) {
        self.mailbox_bytes += rest.len();
        self.mailbox.push_front(Queued::Rest(rest));
    }

    /// Takes one invocation token, refilling at the configured rate; `false` when none is left.
    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let rate = f64::from(self.hub.session.invocation_rate);
        self.tokens =
            (self.tokens + elapsed * rate).min(f64::from(self.hub.session.invocation_burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Work for the shard that the last event produced.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Moves delivered messages into the outbox (pre-encoded frames, shared bytes), counting
    /// and keeping trackable ones for stateful reconnect.
    fn drain_mailbox(&mut self, outbox: &mut Outbox) {
        let Phase::Active { protocol } = self.phase else {
            return;
        };
        let hub = self.hub.index;
        while let Some(queued) = self.mailbox.pop_front() {
            let message = match queued {
                Queued::Message(message) => message,
                Queued::Rest(rest) => {
                    self.mailbox_bytes = self.mailbox_bytes.saturating_sub(rest.len());
                    outbox.push_encoded(rest);
                    continue;
                }
            };
            self.mailbox_bytes = self.mailbox_bytes.saturating_sub(message.len());
            let kind = message.kind();
            stats::local(|s| s.sent_messages(hub, kind, 1));
            if message.is_trackable()
                && let Some(stateful) = self.stateful.as_deref_mut()
            {
                stateful.track(message.payload(protocol));
            }
            outbox.push_encoded(message.frame(protocol));
        }
        // An idle session keeps no queue allocation (as the outbox does): a health push or a
        // group send every few seconds would otherwise pin one per connection.
        if self.mailbox.capacity() > 0 {
            self.mailbox = VecDeque::new();
        }
    }

    /// Whether sending must wait for Acks (the resend buffer is full).
    fn is_send_blocked(&self) -> bool {
        self.stateful
            .as_ref()
            .is_some_and(|s| s.unacked_bytes >= self.hub.session.resend_buffer)
    }

    /// The public connection id.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The public connection id, shared.
    pub fn shared_connection_id(&self) -> Rc<str> {
        Rc::clone(&self.connection_id)
    }

    /// The protocol chosen in the handshake, once it is done.
    pub fn protocol(&self) -> Option<HubProtocol> {
        match self.phase {
            Phase::Active { protocol } => Some(protocol),
            Phase::Handshake { .. } => None,
        }
    }

    fn handshake(
        &mut self,
        bytes: &[u8],
        outbox: &mut Outbox,
        now: Instant,
    ) -> Result<(), AppClose> {
        self.inbound.extend_from_slice(bytes);
        let parsed = handshake::parse_request(&self.inbound, self.hub.session.max_message_size)
            .and_then(|parsed| match parsed {
                HandshakeParse::NeedMore => Ok(None),
                HandshakeParse::Request(request, used) => {
                    handshake::select_protocol(&request, &self.hub.protocols)
                        .map(|protocol| Some((protocol, used, request.version)))
                }
            });
        match parsed {
            Ok(None) => Ok(()),
            Err(error) => Err(self.refuse_handshake(&error, outbox)),
            Ok(Some((protocol, used, version))) => {
                let started = match self.phase {
                    Phase::Handshake { deadline } => {
                        deadline.checked_sub(self.hub.session.handshake_timeout)
                    }
                    Phase::Active { .. } => None,
                };
                let elapsed =
                    started.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                let hub = self.hub.index;
                stats::local(|s| s.handshake_completed(hub, elapsed));
                self.phase = Phase::Active { protocol };
                if self.stateful_negotiated && version >= 2 {
                    self.stateful = Some(Stateful::new());
                }
                self.inbound.advance(used);
                // Nothing of the handshake buffer stays with an idle connection.
                let rest = std::mem::take(&mut self.inbound).freeze();
                // The success response and anything the first messages produce share a frame.
                let result = self.receive(rest, now);
                let mut frame = frame_buffer();
                frame.extend_from_slice(handshake::SUCCESS_RESPONSE);
                let tracked = self.encode_outgoing(protocol, &mut frame);
                self.send_frame(protocol, frame, &tracked, outbox);
                // Delivered before the handshake finished (state pushed on connect, groups
                // joined on connect): sent right after the handshake response.
                self.drain_mailbox(outbox);
                result
            }
        }
    }

    fn refuse_handshake(&mut self, error: &HandshakeError, outbox: &mut Outbox) -> AppClose {
        stats::local(|s| s.handshake_failed(error.reason_index()));
        let mut frame = BytesMut::new();
        handshake::encode_error_response(
            &error.response_text(self.hub.session.detailed_errors),
            &mut frame,
        );
        outbox.push_frame(OpCode::Text, frame.freeze());
        normal_close()
    }

    /// Decodes and handles every complete hub message in `bytes` (plus what was buffered).
    fn receive(&mut self, bytes: Bytes, now: Instant) -> Result<(), AppClose> {
        let Phase::Active { protocol } = self.phase else {
            return Ok(());
        };
        let mut data = if self.inbound.is_empty() {
            bytes
        } else {
            self.inbound.extend_from_slice(&bytes);
            self.inbound.split().freeze()
        };
        loop {
            if data.is_empty() {
                return Ok(());
            }
            match protocol.decode(&data, self.hub.session.max_message_size) {
                Ok(Decoded::Message(message, used)) => {
                    data = data.slice(used..);
                    if message.is_trackable()
                        && let Some(stateful) = self.stateful.as_deref_mut()
                    {
                        let id = stateful.next_expected;
                        stateful.next_expected += 1;
                        if id <= stateful.received {
                            // Resent by the client after a reconnect and already handled.
                            continue;
                        }
                        stateful.received = id;
                        stateful.ack_due.get_or_insert(now + ACK_INTERVAL);
                    }
                    self.handle(message, now)?;
                }
                Ok(Decoded::NeedMore) => {
                    self.inbound.extend_from_slice(&data);
                    return Ok(());
                }
                Err(error) => {
                    let text = self.error_text(
                        "Connection closed with an error.",
                        &format!("InvalidDataException: {error}"),
                    );
                    return Err(self.close_with_error(text));
                }
            }
        }
    }

    fn handle(&mut self, message: HubMessage, now: Instant) -> Result<(), AppClose> {
        let hub = self.hub.index;
        let kind = stats::message_type(&message);
        stats::local(|s| s.received_message(hub, kind));
        match message {
            HubMessage::Invocation(invocation) | HubMessage::StreamInvocation(invocation)
                if !self.take_token(now) =>
            {
                stats::local(|s| s.dropped(DropReason::RateLimit, 1));
                if let Some(id) = invocation.invocation_id {
                    self.fail(id, "Rate limit exceeded".to_owned());
                }
                Ok(())
            }
            HubMessage::Invocation(invocation) => {
                let effects = self.effects.len();
                let result = self.invoke(invocation, Reply::Single);
                self.observe_invocation(now, effects);
                result
            }
            HubMessage::StreamInvocation(invocation) => {
                let effects = self.effects.len();
                let result = self.invoke(invocation, Reply::Stream);
                self.observe_invocation(now, effects);
                result
            }
            HubMessage::StreamItem(StreamItem {
                invocation_id,
                item,
                ..
            }) => {
                // Items of unknown streams are ignored, as in ASP.NET.
                if let Some(upload) = self
                    .calls
                    .as_deref_mut()
                    .and_then(|c| c.uploads.iter_mut().find(|u| u.stream_id == invocation_id))
                {
                    upload.concat.push(&item);
                }
                Ok(())
            }
            HubMessage::Completion(completion) => self.complete_upload(completion),
            HubMessage::CancelInvocation(CancelInvocation { invocation_id, .. }) => {
                if let Some(at) = self
                    .streams()
                    .iter()
                    .position(|s| s.invocation_id == invocation_id)
                {
                    let stream = self.calls().streams.remove(at);
                    if let Some(event) = stream.source.on_cancel() {
                        self.outgoing.push(event);
                    }
                    self.outgoing
                        .push(completion(invocation_id, CompletionOutcome::Void));
                }
                Ok(())
            }
            HubMessage::Ping => {
                if self.client_deadline.is_none() {
                    self.client_deadline = Some(now + self.hub.session.client_timeout);
                }
                Ok(())
            }
            HubMessage::Close(_) => {
                // The client is leaving: answer without error and without reconnect.
                self.outgoing.push(HubMessage::Close(Close::default()));
                Err(normal_close())
            }
            HubMessage::Ack(id) => {
                if let Some(stateful) = self.stateful.as_deref_mut() {
                    while let Some((seq, bytes)) = stateful.unacked.front() {
                        if *seq > id {
                            break;
                        }
                        stateful.unacked_bytes -= bytes.len();
                        stateful.unacked.pop_front();
                    }
                }
                self.run_waiting()
            }
            HubMessage::Sequence(id) => {
                let Some(received) = self.stateful.as_ref().map(|s| s.received) else {
                    return Ok(());
                };
                if id > received + 1 {
                    let text = self.error_text(
                        "Connection closed with an error.",
                        "InvalidOperationException: Sequence ID greater than amount of messages we've received.",
                    );
                    return Err(self.close_with_error(text));
                }
                if let Some(stateful) = self.stateful.as_deref_mut() {
                    stateful.next_expected = id;
                }
                Ok(())
            }
            HubMessage::Unknown(_) => Ok(()),
        }
    }

    /// Records how long an invocation received at `received` took, unless it went to an
    /// upstream backend (effects after index `effects_before`), which records its own time
    /// when the backend answers.
    fn observe_invocation(&self, received: Instant, effects_before: usize) {
        let upstream = self
            .effects
            .get(effects_before..)
            .is_some_and(|new| new.iter().any(|e| matches!(e, Effect::Upstream(_))));
        if !upstream {
            let hub = self.hub.index;
            let elapsed = Instant::now().saturating_duration_since(received);
            stats::local(|s| s.invocation_completed(hub, elapsed));
        }
    }

    fn invoke(&mut self, invocation: Invocation, mode: Reply) -> Result<(), AppClose> {
        let target = invocation.target.clone();
        let id = invocation.invocation_id.clone();
        let Some(method) = self.hub.method(&target).cloned() else {
            if let Some(id) = id {
                self.fail(id, format!("Unknown hub method '{target}'"));
            }
            return Ok(());
        };
        match (method.action.reply(), mode) {
            (Reply::Stream, Reply::Single) => {
                if let Some(id) = id {
                    self.fail(id, format!(
                        "The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
                    ));
                }
                return Ok(());
            }
            (Reply::Single, Reply::Stream) => {
                self.fail(id.unwrap_or_default(), format!(
                    "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                ));
                return Ok(());
            }
            _ => {}
        }
        if self.running >= self.hub.session.max_parallel_invocations || self.is_send_blocked() {
            if self.calls.as_ref().map_or(0, |c| c.waiting.len()) >= MAX_WAITING_INVOCATIONS {
                let text = self.error_text(
                    "Connection closed with an error.",
                    "InvalidOperationException: Too many invocations are waiting for a free slot.",
                );
                return Err(self.close_with_error(text));
            }
            self.calls().waiting.push_back((invocation, mode));
            return Ok(());
        }
        if mode == Reply::Stream
            && let Some(id) = &id
            && self.streams().iter().any(|s| &s.invocation_id == id)
        {
            self.fail(
                id.clone(),
                format!("Invocation ID '{id}' is already in use."),
            );
            return Ok(());
        }
        let pending_joins = if self.hub.session.max_groups == 0 {
            0
        } else {
            self.effects
                .iter()
                .filter(|e| matches!(e, Effect::JoinGroup(_)))
                .count()
        };
        let mut caller = Caller {
            connection_id: &self.connection_id,
            request_headers: &self.request_headers,
            outgoing: &mut self.outgoing,
            effects: &mut self.effects,
            key_id: self.key_id,
            admin: self.admin,
            groups: GroupRoom {
                joined: &self.groups,
                // Joins of earlier invocations in this batch are not applied yet: count them.
                counted: self.groups.len() - self.pinned_groups + pending_joins,
                max: self.hub.session.max_groups,
            },
        };
        match actions::invoke_method(&method, invocation, &mut caller) {
            Err(error) => {
                if let Some(id) = id {
                    let text = self.bind_error_text(&target, &error);
                    self.fail(id, text);
                }
            }
            Ok(Outcome::Complete(CompletionOutcome::Void))
                if self.await_subscriptions
                    && self
                        .effects
                        .iter()
                        .any(|e| matches!(e, Effect::JoinGroup(_))) =>
            {
                // Done once the backplane has the new groups (see `Query::Subscribed`).
                self.running += 1;
                self.effects.push(Effect::Query {
                    invocation_id: id,
                    query: Query::Subscribed,
                });
            }
            Ok(Outcome::Complete(outcome)) => {
                if let Some(id) = id {
                    self.outgoing.push(completion(id, outcome));
                }
            }
            Ok(Outcome::Stream(source)) => self.calls().streams.push(ActiveStream {
                invocation_id: id.unwrap_or_default(),
                source,
            }),
            Ok(Outcome::AskCaller { target, arguments }) => {
                self.running += 1;
                let calls = self.calls();
                calls.next_result_id += 1;
                let sent_id = format!("s{}", calls.next_result_id);
                self.outgoing.push(HubMessage::Invocation(Invocation {
                    headers: Default::default(),
                    invocation_id: Some(sent_id.clone()),
                    target,
                    arguments,
                    stream_ids: Vec::new(),
                }));
                self.calls().pending_results.push(PendingResult {
                    sent_id,
                    reply_to: id,
                    method: method.name.clone(),
                });
            }
            Ok(Outcome::Query(query)) => {
                // Running until the shard answers (right after this event, in
                // `HubEndpoint::apply_effects`).
                self.running += 1;
                self.effects.push(Effect::Query {
                    invocation_id: id,
                    query,
                });
            }
            Ok(Outcome::Upstream { url, arguments }) => {
                // Running until the backend answers ([`Self::complete_later`]).
                self.running += 1;
                self.effects.push(Effect::Upstream(UpstreamCall {
                    invocation_id: id,
                    method: method.name.clone(),
                    url,
                    arguments,
                }));
            }
            Ok(Outcome::AwaitUpload { stream_id }) => {
                self.running += 1;
                self.calls().uploads.push(Upload {
                    stream_id,
                    invocation_id: id,
                    method: method.name.clone(),
                    concat: Concat::default(),
                });
            }
        }
        Ok(())
    }

    /// A Completion from the client: a client result, or the end of an upload stream.
    fn complete_upload(&mut self, completion_message: Completion) -> Result<(), AppClose> {
        if let Some(remote) = self.remote_results.as_mut().map(|r| &mut r.0)
            && let Some(at) = remote
                .iter()
                .position(|(id, _)| *id == completion_message.invocation_id)
        {
            let (_, return_channel) = remote.swap_remove(at);
            self.effects.push(Effect::ReturnResult {
                return_channel,
                completion: completion_message,
            });
            return Ok(());
        }
        if let Some(at) = self.calls.as_ref().and_then(|c| {
            c.pending_results
                .iter()
                .position(|p| p.sent_id == completion_message.invocation_id)
        }) {
            let pending = self.calls().pending_results.remove(at);
            self.running = self.running.saturating_sub(1);
            if let Some(id) = pending.reply_to {
                let outcome = match completion_message.outcome {
                    CompletionOutcome::Result(result) => CompletionOutcome::Result(result),
                    CompletionOutcome::Void => {
                        CompletionOutcome::Result(crate::protocol::signalr::Payload::from_value(
                            crate::protocol::signalr::Value::Null,
                        ))
                    }
                    // ASP.NET throws the client's error as a HubException in the hub method.
                    CompletionOutcome::Error(error) => CompletionOutcome::Error(format!(
                        "An unexpected error occurred invoking '{}' on the server. HubException: {error}",
                        pending.method
                    )),
                };
                self.outgoing.push(completion(id, outcome));
            }
            return self.run_waiting();
        }
        let Some(at) = self.calls.as_ref().and_then(|c| {
            c.uploads
                .iter()
                .position(|u| u.stream_id == completion_message.invocation_id)
        }) else {
            return Ok(());
        };
        let upload = self.calls().uploads.remove(at);
        self.running = self.running.saturating_sub(1);
        if let Some(id) = upload.invocation_id {
            let outcome = match completion_message.outcome {
                CompletionOutcome::Error(error) => CompletionOutcome::Error(self.error_text(
                    &format!(
                        "An unexpected error occurred invoking '{}' on the server.",
                        upload.method
                    ),
                    &format!("Exception: {error}"),
                )),
                _ => CompletionOutcome::Result(crate::protocol::signalr::Payload::string(
                    upload.concat.into_string(),
                )),
            };
            self.outgoing.push(completion(id, outcome));
        }
        self.run_waiting()
    }

    /// Runs waiting invocations while slots and send buffer allow.
    fn run_waiting(&mut self) -> Result<(), AppClose> {
        while self.running < self.hub.session.max_parallel_invocations
            && !self.is_send_blocked()
            && let Some((invocation, mode)) = self
                .calls
                .as_deref_mut()
                .and_then(|c| c.waiting.pop_front())
        {
            self.invoke(invocation, mode)?;
        }
        Ok(())
    }

    fn fail(&mut self, invocation_id: String, error: String) {
        self.outgoing
            .push(completion(invocation_id, CompletionOutcome::Error(error)));
    }

    fn bind_error_text(&self, target: &str, error: &BindError) -> String {
        self.error_text(
            &format!("Failed to invoke '{target}' due to an error on the server."),
            &format!("InvalidDataException: {error}"),
        )
    }

    /// ASP.NET's `ErrorMessageHelper.BuildErrorMessage`: the detail only in detailed mode.
    fn error_text(&self, message: &str, detail: &str) -> String {
        if self.hub.session.detailed_errors {
            format!("{message} {detail}")
        } else {
            message.to_owned()
        }
    }

    /// Queues a Close carrying `error` (the client may reconnect) and ends the connection.
    fn close_with_error(&mut self, error: String) -> AppClose {
        self.outgoing.push(HubMessage::Close(Close {
            error: Some(error),
            allow_reconnect: true,
        }));
        normal_close()
    }

    /// Encodes the messages produced so far after what `frame` holds, and returns where the
    /// trackable ones are when stateful reconnect is on (to keep them for resending).
    fn encode_outgoing(
        &mut self,
        protocol: HubProtocol,
        frame: &mut BytesMut,
    ) -> Vec<Range<usize>> {
        let mut tracked = Vec::new();
        let hub = self.hub.index;
        for message in std::mem::take(&mut self.outgoing) {
            let kind = stats::message_type(&message);
            stats::local(|s| s.sent_messages(hub, kind, 1));
            let start = frame.len();
            // Payloads built here or decoded by the codecs always encode; a failure (which
            // leaves `frame` as it was) would drop only this message.
            if protocol.encode(&message, frame).is_err() {
                frame.truncate(start);
                continue;
            }
            if message.is_trackable() && self.stateful.is_some() && frame.len() > start {
                tracked.push(start..frame.len());
            }
        }
        tracked
    }

    /// Queues `frame` (a buffer from [`frame_buffer`], payload after the headroom) as one
    /// WebSocket frame, unless it is empty, and keeps the `tracked` messages for resending.
    fn send_frame(
        &mut self,
        protocol: HubProtocol,
        frame: BytesMut,
        tracked: &[Range<usize>],
        outbox: &mut Outbox,
    ) {
        if frame.len() <= HEADROOM {
            return;
        }
        let frame = outbox.push_frame_in_place(frame_type(protocol), frame);
        if let Some(stateful) = self.stateful.as_deref_mut() {
            for range in tracked {
                stateful.track(frame.slice(range.clone()));
            }
        }
    }

    /// Puts everything produced by the current event into one frame, encoded in place after
    /// room for the frame header (one buffer, each payload copied once).
    fn flush(&mut self, outbox: &mut Outbox) {
        let Phase::Active { protocol } = self.phase else {
            self.outgoing.clear();
            return;
        };
        if self.outgoing.is_empty() {
            return;
        }
        let mut frame = frame_buffer();
        let tracked = self.encode_outgoing(protocol, &mut frame);
        self.send_frame(protocol, frame, &tracked, outbox);
    }
}

impl WebSocketApp for Session {
    fn on_message(
        &mut self,
        message: DataMessage,
        outbox: &mut Outbox,
        now: Instant,
    ) -> Result<(), AppClose> {
        let bytes = match message {
            DataMessage::Text(bytes) | DataMessage::Binary(bytes) => bytes,
        };
        if let Some(deadline) = self.client_deadline.as_mut() {
            *deadline = now + self.hub.session.client_timeout;
        }
        if let Phase::Handshake { .. } = self.phase {
            return self.handshake(&bytes, outbox, now);
        }
        let result = self.receive(bytes, now);
        self.flush(outbox);
        result
    }

    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake { deadline } => Some(deadline),
            Phase::Active { .. } => [
                Some(self.next_ping),
                self.client_deadline,
                self.stateful.as_ref().and_then(|s| s.ack_due),
                self.conflator.as_ref().and_then(|c| c.next_due()),
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    fn on_deadline(&mut self, now: Instant, outbox: &mut Outbox) -> Result<(), AppClose> {
        match self.phase {
            Phase::Handshake { deadline } if now >= deadline => {
                Err(self.refuse_handshake(&HandshakeError::Canceled, outbox))
            }
            Phase::Handshake { .. } => Ok(()),
            Phase::Active { .. } => {
                let mut result = Ok(());
                if self.client_deadline.is_some_and(|at| now >= at) {
                    let text = self.error_text(
                        "Connection closed with an error.",
                        "OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.",
                    );
                    result = Err(self.close_with_error(text));
                } else if now >= self.next_ping {
                    self.outgoing.push(HubMessage::Ping);
                    self.next_ping = now + self.hub.session.keepalive_interval;
                }
                if let Some(mut conflator) = self.conflator.take() {
                    conflator.release_due(now, |m| self.queue(m, false));
                    self.conflator = Some(conflator);
                    self.drain_mailbox(outbox);
                }
                if let Some(stateful) = self.stateful.as_deref_mut()
                    && stateful.ack_due.is_some_and(|at| now >= at)
                {
                    stateful.ack_due = None;
                    if stateful.received > stateful.acked {
                        stateful.acked = stateful.received;
                        self.outgoing.push(HubMessage::Ack(stateful.received));
                    }
                }
                self.flush(outbox);
                result
            }
        }
    }

    fn on_open(&mut self, outbox: &mut Outbox) {
        let Phase::Active { protocol } = self.phase else {
            return;
        };
        if let Some(stateful) = self.stateful.as_deref_mut()
            && std::mem::take(&mut stateful.resume_pending)
        {
            // ASP.NET `MessageBuffer.ResendAsync`: Sequence (always), then every unacked
            // message.
            let first = stateful
                .unacked
                .front()
                .map_or(stateful.sent + 1, |(seq, _)| *seq);
            let mut sequence = BytesMut::new();
            let _ = protocol.encode(&HubMessage::Sequence(first), &mut sequence);
            let mut parts = vec![sequence.freeze()];
            parts.extend(stateful.unacked.iter().map(|(_, bytes)| bytes.clone()));
            outbox.push_frame_parts(frame_type(protocol), parts);
        }
        // What was delivered while the socket was away follows, in order.
        self.drain_mailbox(outbox);
        // Completions that arrived while the socket was away (upstream calls).
        self.flush(outbox);
    }

    fn on_drained(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        if self.streams().is_empty() || self.is_send_blocked() {
            return Ok(());
        }
        let Some(calls) = self.calls.as_deref_mut() else {
            return Ok(());
        };
        let mut finished = Vec::new();
        for (index, stream) in calls.streams.iter_mut().enumerate() {
            for _ in 0..ITEMS_PER_TURN {
                match stream.source.next_item() {
                    Some(item) => self.outgoing.push(HubMessage::StreamItem(StreamItem {
                        headers: Default::default(),
                        invocation_id: stream.invocation_id.clone(),
                        item,
                    })),
                    None => break,
                }
            }
            if stream.source.is_finished() {
                finished.push(index);
            }
        }
        for index in finished.into_iter().rev() {
            let stream = calls.streams.remove(index);
            self.outgoing
                .push(completion(stream.invocation_id, CompletionOutcome::Void));
        }
        self.flush(outbox);
        Ok(())
    }

    fn on_wake(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        if self.overflowed {
            // Only the end of a frame already started is left in the mailbox.
            self.drain_mailbox(outbox);
            let text = self.error_text(
                "Connection closed with an error.",
                "InvalidOperationException: The connection could not keep up with the messages sent to it.",
            );
            let close = self.close_with_error(text);
            self.flush(outbox);
            return Err(close);
        }
        self.drain_mailbox(outbox);
        // Completions that arrived outside a hook, and what waited for their slots.
        let result = self.run_waiting();
        self.flush(outbox);
        result
    }

    fn on_shutdown(&mut self, outbox: &mut Outbox) {
        if let Phase::Active { .. } = self.phase {
            self.outgoing.push(HubMessage::Close(Close {
                error: None,
                allow_reconnect: true,
            }));
            self.flush(outbox);
        }
    }
}

/// A Completion without headers.
fn completion(invocation_id: String, outcome: CompletionOutcome) -> HubMessage {
    HubMessage::Completion(Completion {
        headers: Default::default(),
        invocation_id,
        outcome,
    })
}

/// The WebSocket frame type of a protocol.
fn frame_type(protocol: HubProtocol) -> OpCode {
    protocol.transfer_format().opcode()
}

/// ASP.NET closes the WebSocket with 1000 after a SignalR Close or a handshake error.
fn normal_close() -> AppClose {
    AppClose {
        code: CloseCode::NORMAL,
        reason: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_session_stays_small() {
        // Every idle SignalR connection carries one; perf/idle_memory.py --signalr measures
        // the whole cost.
        let size = std::mem::size_of::<Session>();
        assert!(size <= 320, "Session is {size} bytes");
    }

    #[test]
    fn the_group_limit_counts_joined_groups_but_not_pinned_ones_or_repeats() {
        let mut hub = HubDefinition::diagnostics("/hubs/diagnostics");
        hub.session.max_groups = 2;
        let mut session = Session::new(
            Rc::new(hub),
            "c".to_owned(),
            Vec::new(),
            false,
            Instant::now(),
        );
        assert_eq!(session.add_group("vkey-7".into(), true), Ok(true));
        assert_eq!(session.add_group("a".into(), false), Ok(true));
        assert_eq!(session.add_group("a".into(), false), Ok(false));
        assert_eq!(session.add_group("b".into(), false), Ok(true));
        assert_eq!(
            session.add_group("c".into(), false),
            Err(GroupLimit { max: 2 })
        );
        // Leaving the pinned group frees no counted place; leaving a counted one does.
        assert!(session.remove_group("vkey-7"));
        assert_eq!(
            session.add_group("c".into(), false),
            Err(GroupLimit { max: 2 })
        );
        assert!(session.remove_group("a"));
        assert_eq!(session.add_group("c".into(), false), Ok(true));
        let room = session.group_room();
        assert_eq!(room.admits(&["b".into(), "c".into()]), Ok(()));
        assert_eq!(
            room.admits(&["d".into(), "d".into()]),
            Err(GroupLimit { max: 2 })
        );
        assert_eq!(session.take_groups(), vec!["b".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn a_drained_mailbox_keeps_no_allocation() {
        use crate::hub::actions::event;
        use crate::protocol::signalr::Payload;

        let hub = Rc::new(HubDefinition::diagnostics("/hubs/diagnostics"));
        let now = Instant::now();
        let mut session = Session::new(hub, "c".to_owned(), Vec::new(), false, now);
        let mut outbox = Outbox::new();
        let handshake = Bytes::from_static(b"{\"protocol\":\"json\",\"version\":1}\x1e");
        session
            .on_message(DataMessage::Text(handshake), &mut outbox, now)
            .unwrap();
        let message = event("HealthStatus", vec![Payload::string("ok")]);
        let message = Arc::new(PreparedMessage::new(&message).unwrap());
        session.enqueue(message, false, now);
        assert!(session.mailbox.capacity() > 0);
        session.on_wake(&mut outbox).unwrap();
        assert_eq!(session.mailbox.capacity(), 0);
    }

    #[test]
    fn a_broadcast_is_written_through_only_when_nothing_waits_ahead_of_it() {
        use crate::hub::actions::{Target, event};
        use crate::protocol::signalr::Payload;

        let hub = Rc::new(HubDefinition::diagnostics("/hubs/diagnostics"));
        let now = Instant::now();
        let mut session = Session::new(hub, "c".to_owned(), Vec::new(), false, now);
        let send = event("Send", vec![Payload::string("hi")]);
        // Not a conflated event: it carries a barrier tag.
        let tag = crate::hub::conflation::tag(&Target::All, &send, &["Progress".to_owned()]);
        let message = Arc::new(PreparedMessage::new(&send).unwrap().with_conflation(tag));
        assert_eq!(
            session.take_write_through(&message),
            None,
            "before the handshake"
        );
        let mut outbox = Outbox::new();
        let handshake = Bytes::from_static(b"{\"protocol\":\"json\",\"version\":1}\x1e");
        session
            .on_message(DataMessage::Text(handshake), &mut outbox, now)
            .unwrap();
        assert_eq!(
            session.take_write_through(&message),
            Some(message.frame(HubProtocol::Json))
        );
        session.enqueue(Arc::clone(&message), false, now);
        assert_eq!(
            session.take_write_through(&message),
            None,
            "behind a queued one"
        );
        session.on_wake(&mut outbox).unwrap();
        session.queue_rest(Bytes::from_static(b"rest"));
        assert_eq!(
            session.take_write_through(&message),
            None,
            "behind a frame's rest"
        );
    }
}
