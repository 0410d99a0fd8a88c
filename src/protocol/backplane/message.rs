//! The four backplane payloads, each one MessagePack array (`RedisProtocol.cs`;
//! `signalr-protocol.md` §7.2):
//!
//! | Payload | Channel | Array |
//! |---|---|---|
//! | [`BackplaneInvocation`] | `:all`, `:group:`, `:connection:`, `:user:` | `[excludedIds: [str], serializations: {str: bin}, (invocationId: str, returnChannel: str)?]` |
//! | [`GroupCommand`] | `:internal:groups` | `[id: int32, serverName: str, action: 1 \| 2, groupName: str, connectionId: str]` |
//! | [`Ack`] | `:internal:ack:{server}` | `[id: int32]` |
//! | [`ReturnedCompletion`] | `:internal:return:{server}` | `[protocolName: str, bin]` |
//!
//! Encoders write what MessagePack-CSharp writes: the smallest integer form, fixstr/str8/str16/
//! str32, bin8/16/32, fixarray/array16/array32 and fixmap/map16/map32. Decoders follow .NET's
//! readers: any integer form whose value fits, nil for an absent excluded id or serialization
//! (as an empty one), arrays longer than needed (the extra items are not read, so they are not
//! validated either), bytes after the array ignored. Serialized hub messages are [`Bytes`]
//! slices of the input, not copies. A declared count or length is never trusted for an
//! allocation beyond what the input can hold.

use bytes::{BufMut, Bytes, BytesMut};
use rmp::Marker;

use super::BackplaneProtocolError;
use super::transcode::{decode_first, transcode};
use crate::protocol::signalr::{HubMessage, HubProtocol};

/// The name of the hub protocol a serialized hub message is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProtocolName {
    /// `"json"` or `"messagepack"`.
    Known(HubProtocol),
    /// A protocol ringhub does not speak (a custom `IHubProtocol` on a .NET node); kept so
    /// that nothing is lost, never used for a client.
    Other(String),
}

impl ProtocolName {
    /// The protocol called `name` (exact, case-sensitive, as .NET's resolver compares).
    pub fn parse(name: &str) -> Self {
        HubProtocol::from_name(name).map_or_else(|| Self::Other(name.to_owned()), Self::Known)
    }

    /// The name as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(protocol) => protocol.name(),
            Self::Other(name) => name,
        }
    }

    /// The protocol, if ringhub speaks it.
    pub fn protocol(&self) -> Option<HubProtocol> {
        match self {
            Self::Known(protocol) => Some(*protocol),
            Self::Other(_) => None,
        }
    }
}

impl From<HubProtocol> for ProtocolName {
    fn from(protocol: HubProtocol) -> Self {
        Self::Known(protocol)
    }
}

/// One entry of an invocation's serializations: a complete framed hub message in one protocol
/// (JSON text plus `0x1E`, or VarInt prefix plus MessagePack array), copied verbatim to every
/// local client that speaks it. `PreparedMessage::payload` is exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialization {
    /// The protocol the bytes are in.
    pub protocol: ProtocolName,
    /// The framed hub message.
    pub bytes: Bytes,
}

impl Serialization {
    /// An entry for `protocol`.
    pub fn new(protocol: HubProtocol, bytes: Bytes) -> Self {
        Self {
            protocol: ProtocolName::Known(protocol),
            bytes,
        }
    }
}

/// Where a client-result invocation wants its completion sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResultRoute {
    /// The id the invocation inside carries (22 characters of base64 from a .NET node).
    pub invocation_id: String,
    /// The return channel without the app prefix (see `Channels::resolve_return`).
    pub return_channel: String,
}

/// A hub message for the connections a channel reaches (`WriteInvocation`/`ReadInvocation`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackplaneInvocation {
    /// Connection ids that must not get it (AllExcept, GroupExcept). Only the `:all` and
    /// `:group:` handlers apply them.
    pub excluded_ids: Vec<String>,
    /// The message, once per protocol. .NET writes one entry per protocol it has registered
    /// and drops the message for a client whose protocol is missing, so publish every one.
    pub serializations: Vec<Serialization>,
    /// Set for a client-result invocation (the array then has 4 items).
    pub client_result: Option<ClientResultRoute>,
}

impl BackplaneInvocation {
    /// An invocation for everyone the channel reaches, in the given serializations.
    pub fn new(serializations: Vec<Serialization>) -> Self {
        Self {
            serializations,
            ..Self::default()
        }
    }

    /// Whether `connection_id` is excluded.
    pub fn is_excluded(&self, connection_id: &str) -> bool {
        self.excluded_ids.iter().any(|id| id == connection_id)
    }

    /// The serialization in `protocol`, if the publisher included it (the first, if twice).
    pub fn serialization(&self, protocol: HubProtocol) -> Option<&Bytes> {
        self.serializations
            .iter()
            .find(|s| s.protocol == ProtocolName::Known(protocol))
            .map(|s| &s.bytes)
    }

    /// The framed hub message for a client speaking `protocol`: the publisher's bytes when it
    /// included that protocol (a reference-count bump), otherwise the message re-encoded from
    /// another protocol it did include, so a client is never skipped because a .NET node
    /// published JSON only.
    ///
    /// # Errors
    /// [`BackplaneProtocolError::ProtocolUnavailable`] when no serialization is in a protocol
    /// ringhub speaks; the source's decoding or re-encoding errors.
    pub fn message_for(&self, protocol: HubProtocol) -> Result<Bytes, BackplaneProtocolError> {
        if let Some(bytes) = self.serialization(protocol) {
            return Ok(bytes.clone());
        }
        let (from, bytes) = self
            .serializations
            .iter()
            .find_map(|s| Some((s.protocol.protocol()?, &s.bytes)))
            .ok_or(BackplaneProtocolError::ProtocolUnavailable)?;
        transcode(bytes, from, protocol)
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        let blobs: usize = self
            .serializations
            .iter()
            .map(|s| s.protocol.as_str().len() + s.bytes.len() + 6)
            .sum();
        out.reserve(blobs + 16);
        put_array_len(out, if self.client_result.is_some() { 4 } else { 2 });
        put_array_len(out, self.excluded_ids.len());
        for id in &self.excluded_ids {
            put_str(out, id);
        }
        put_map_len(out, self.serializations.len());
        for serialization in &self.serializations {
            put_str(out, serialization.protocol.as_str());
            put_bin(out, &serialization.bytes);
        }
        // Last, so a reader that only knows the 2-item form still reads the rest.
        if let Some(route) = &self.client_result {
            put_str(out, &route.invocation_id);
            put_str(out, &route.return_channel);
        }
    }

    /// Decodes a payload; the serializations are slices of `input`. A nil excluded id is
    /// skipped and a nil serialization is empty. A client-result route whose id or channel is
    /// nil is treated as absent.
    ///
    /// # Errors
    /// Truncated or wrong-typed input, an array of fewer than 2 items.
    pub fn decode(input: &Bytes) -> Result<Self, BackplaneProtocolError> {
        let (mut reader, count) = Reader::envelope(input, "Invocation", 2)?;
        let excluded = reader.array_len("excludedIds")?;
        // Every item takes at least one byte: a hostile count cannot over-allocate.
        let mut excluded_ids = Vec::with_capacity(excluded.min(reader.remaining()));
        for _ in 0..excluded {
            if let Some(id) = reader.str("excludedIds")? {
                excluded_ids.push(id.to_owned());
            }
        }
        let entries = reader.map_len("serializations")?;
        let mut serializations = Vec::with_capacity(entries.min(reader.remaining() / 2));
        for _ in 0..entries {
            let name = reader.required_str("protocolName")?;
            let bytes = reader.bin("serializedMessage")?.unwrap_or_default();
            serializations.push(Serialization {
                protocol: ProtocolName::parse(name),
                bytes,
            });
        }
        let client_result = if count > 3 {
            let invocation_id = reader.str("invocationId")?;
            let return_channel = reader.str("returnChannel")?;
            invocation_id
                .zip(return_channel)
                .map(|(id, channel)| ClientResultRoute {
                    invocation_id: id.to_owned(),
                    return_channel: channel.to_owned(),
                })
        } else {
            None
        };
        Ok(Self {
            excluded_ids,
            serializations,
            client_result,
        })
    }
}

/// What a group command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// 1: add the connection to the group.
    Add,
    /// 2: remove it.
    Remove,
}

impl GroupAction {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Self::Add => 1,
            Self::Remove => 2,
        }
    }

    /// The action a byte stands for.
    ///
    /// # Errors
    /// [`BackplaneProtocolError::UnknownGroupAction`] for anything but 1 and 2.
    pub fn from_byte(byte: u8) -> Result<Self, BackplaneProtocolError> {
        match byte {
            1 => Ok(Self::Add),
            2 => Ok(Self::Remove),
            other => Err(BackplaneProtocolError::UnknownGroupAction(other)),
        }
    }
}

/// Add a connection owned by some other server to a group, or remove it
/// (`WriteGroupCommand`/`ReadGroupCommand`). Every server receives it; the owner acts on it and
/// publishes an [`Ack`] with `id` to `:internal:ack:{server_name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommand {
    /// The sender's counter, echoed in the ack.
    pub id: i32,
    /// The sender's server name.
    pub server_name: String,
    /// Add or remove.
    pub action: GroupAction,
    /// The group.
    pub group: String,
    /// The connection.
    pub connection_id: String,
}

impl GroupCommand {
    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.server_name.len() + self.group.len() + self.connection_id.len() + 16);
        put_array_len(out, 5);
        put_int(out, self.id.into());
        put_str(out, &self.server_name);
        put_int(out, self.action.byte().into());
        put_str(out, &self.group);
        put_str(out, &self.connection_id);
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Truncated or wrong-typed input (nil strings included), an array of fewer than 5 items,
    /// an action other than 1 or 2.
    pub fn decode(input: &Bytes) -> Result<Self, BackplaneProtocolError> {
        let (mut reader, _) = Reader::envelope(input, "GroupCommand", 5)?;
        let id = reader.int32("id")?;
        let server_name = reader.required_str("serverName")?.to_owned();
        let action = reader.int("action", "Byte")?;
        let action = u8::try_from(action).map_err(|_| BackplaneProtocolError::WrongType {
            field: "action",
            expected: "Byte",
        })?;
        let action = GroupAction::from_byte(action)?;
        Ok(Self {
            id,
            server_name,
            action,
            group: reader.required_str("groupName")?.to_owned(),
            connection_id: reader.required_str("connectionId")?.to_owned(),
        })
    }
}

/// The acknowledgement of the [`GroupCommand`] with this id (`WriteAck`/`ReadAck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack(pub i32);

impl Ack {
    /// Appends the payload.
    pub fn encode(self, out: &mut BytesMut) {
        put_array_len(out, 1);
        put_int(out, self.0.into());
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Truncated or wrong-typed input, an empty array, an id outside `i32`.
    pub fn decode(input: &Bytes) -> Result<Self, BackplaneProtocolError> {
        let (mut reader, _) = Reader::envelope(input, "Ack", 1)?;
        Ok(Self(reader.int32("id")?))
    }
}

/// ringhub's own message on `{prefix}{hub}:ringhub:keystate` (not part of ASP.NET's format;
/// .NET servers never subscribe to it): a key's new per-key state (NavigationState), so every
/// instance keeps the latest. `[key_id: int, sequence: int, event: str, state: bin (JSON)]`;
/// the highest `sequence` wins everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStateMessage {
    /// The virtual key id.
    pub key_id: i64,
    /// Its place in the order of updates (milliseconds since the epoch, shifted, plus a
    /// per-process counter).
    pub sequence: i64,
    /// The event announcing it (e.g. `NavigationUpdated`).
    pub event: String,
    /// The state as JSON text.
    pub state: Bytes,
}

impl KeyStateMessage {
    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        put_array_len(out, 4);
        put_int(out, self.key_id);
        put_int(out, self.sequence);
        put_str(out, &self.event);
        put_bin(out, &self.state);
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Truncated or wrong-typed input.
    pub fn decode(input: &Bytes) -> Result<Self, BackplaneProtocolError> {
        let (mut reader, _) = Reader::envelope(input, "KeyState", 4)?;
        Ok(Self {
            key_id: reader.int("keyId", "Int64")?,
            sequence: reader.int("sequence", "Int64")?,
            event: reader.required_str("event")?.to_owned(),
            state: reader.bin("state")?.unwrap_or_default(),
        })
    }
}

/// ringhub's own message on `{prefix}{hub}:ringhub:stream`: one chunk a backend posted to a
/// stream key (streamed responses). `[key: str, kind: int (0 item, 1 complete, 2 error),
/// data: bin (the item as JSON, or the error text)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunkMessage {
    /// The stream key.
    pub key: String,
    /// 0: an item, 1: the end, 2: a failure.
    pub kind: u8,
    /// The item's JSON text, or the error text (empty for the end).
    pub data: Bytes,
}

impl StreamChunkMessage {
    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        put_array_len(out, 3);
        put_str(out, &self.key);
        put_int(out, self.kind.into());
        put_bin(out, &self.data);
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Truncated or wrong-typed input, or an unknown kind.
    pub fn decode(input: &Bytes) -> Result<Self, BackplaneProtocolError> {
        let (mut reader, _) = Reader::envelope(input, "StreamChunk", 3)?;
        let key = reader.required_str("key")?.to_owned();
        let kind = reader.int("kind", "Byte")?;
        let kind = u8::try_from(kind)
            .ok()
            .filter(|k| *k <= 2)
            .ok_or_else(|| wrong("kind", "0, 1 or 2"))?;
        Ok(Self {
            key,
            kind,
            data: reader.bin("data")?.unwrap_or_default(),
        })
    }
}

/// A client's answer to a client-result invocation, sent back to the server that started it
/// (`WriteCompletionMessage`/`ReadCompletion`). That server decodes `completion` with the named
/// protocol, so it must be one the server has: JSON is always registered on a .NET node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedCompletion {
    /// The protocol `completion` is in.
    pub protocol: ProtocolName,
    /// A framed Completion message.
    pub completion: Bytes,
}

impl ReturnedCompletion {
    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.protocol.as_str().len() + self.completion.len() + 16);
        put_array_len(out, 2);
        put_str(out, self.protocol.as_str());
        put_bin(out, &self.completion);
    }

    /// Decodes a payload; `completion` is a slice of `input` (empty when nil).
    ///
    /// # Errors
    /// Truncated or wrong-typed input, an array of fewer than 2 items.
    pub fn decode(input: &Bytes) -> Result<Self, BackplaneProtocolError> {
        let (mut reader, _) = Reader::envelope(input, "CompletionMessage", 2)?;
        let protocol = ProtocolName::parse(reader.required_str("protocolName")?);
        let completion = reader.bin("completion")?.unwrap_or_default();
        Ok(Self {
            protocol,
            completion,
        })
    }

    /// The first hub message in `completion` (a Completion, from a well-behaved sender), as
    /// .NET parses one message from it.
    ///
    /// # Errors
    /// [`BackplaneProtocolError::ProtocolUnavailable`] for a protocol ringhub does not speak;
    /// an incomplete or malformed message.
    pub fn message(&self) -> Result<HubMessage, BackplaneProtocolError> {
        let protocol = self
            .protocol
            .protocol()
            .ok_or(BackplaneProtocolError::ProtocolUnavailable)?;
        decode_first(&self.completion, protocol).map(|(message, _)| message)
    }
}

// ---------------------------------------------------------------------------------------------
// Writing MessagePack (the forms MessagePack-CSharp picks)

/// A length as MessagePack's 32-bit maximum; longer cannot be held by a Redis value (512 MB).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A length header's markers: the fix form (base marker, exclusive limit), if the family has
/// one, then the 8-bit form, if it has one, then the 16- and 32-bit forms.
struct LengthForms {
    fix: Option<(u8, usize)>,
    wide8: Option<u8>,
    wide16: u8,
    wide32: u8,
}

const ARRAY: LengthForms = LengthForms {
    fix: Some((0x90, 16)),
    wide8: None,
    wide16: 0xdc,
    wide32: 0xdd,
};
const MAP: LengthForms = LengthForms {
    fix: Some((0x80, 16)),
    wide8: None,
    wide16: 0xde,
    wide32: 0xdf,
};
const STR: LengthForms = LengthForms {
    fix: Some((0xa0, 32)),
    wide8: Some(0xd9),
    wide16: 0xda,
    wide32: 0xdb,
};
const BIN: LengthForms = LengthForms {
    fix: None,
    wide8: Some(0xc4),
    wide16: 0xc5,
    wide32: 0xc6,
};

/// Writes the smallest header of `forms` that holds `len`.
fn put_len(out: &mut BytesMut, len: usize, forms: &LengthForms) {
    if let Some((base, limit)) = forms.fix
        && len < limit
    {
        // Lossless: below `limit` (16 or 32).
        out.put_u8(base | len as u8);
    } else if let (Some(marker), Ok(len)) = (forms.wide8, u8::try_from(len)) {
        out.put_u8(marker);
        out.put_u8(len);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(forms.wide16);
        out.put_u16(len);
    } else {
        out.put_u8(forms.wide32);
        out.put_u32(len32(len));
    }
}

fn put_array_len(out: &mut BytesMut, len: usize) {
    put_len(out, len, &ARRAY);
}

fn put_map_len(out: &mut BytesMut, len: usize) {
    put_len(out, len, &MAP);
}

fn put_str(out: &mut BytesMut, text: &str) {
    put_len(out, text.len(), &STR);
    out.extend_from_slice(text.as_bytes());
}

fn put_bin(out: &mut BytesMut, bytes: &[u8]) {
    put_len(out, bytes.len(), &BIN);
    out.extend_from_slice(bytes);
}

/// The smallest form of `value`: positive/negative fixint, then uint8/16/32/64 for
/// non-negative values and int8/16/32/64 for negative ones.
fn put_int(out: &mut BytesMut, value: i64) {
    if let Ok(v) = u64::try_from(value) {
        if v < 0x80 {
            out.put_u8(v as u8);
        } else if let Ok(v) = u8::try_from(v) {
            out.put_u8(0xcc);
            out.put_u8(v);
        } else if let Ok(v) = u16::try_from(v) {
            out.put_u8(0xcd);
            out.put_u16(v);
        } else if let Ok(v) = u32::try_from(v) {
            out.put_u8(0xce);
            out.put_u32(v);
        } else {
            out.put_u8(0xcf);
            out.put_u64(v);
        }
    } else if value >= -32 {
        out.put_i8(value as i8);
    } else if let Ok(v) = i8::try_from(value) {
        out.put_u8(0xd0);
        out.put_i8(v);
    } else if let Ok(v) = i16::try_from(value) {
        out.put_u8(0xd1);
        out.put_i16(v);
    } else if let Ok(v) = i32::try_from(value) {
        out.put_u8(0xd2);
        out.put_i32(v);
    } else {
        out.put_u8(0xd3);
        out.put_i64(value);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading MessagePack

/// A bounds-checked cursor over one payload.
struct Reader<'a> {
    input: &'a Bytes,
    pos: usize,
}

fn wrong(field: &'static str, expected: &'static str) -> BackplaneProtocolError {
    BackplaneProtocolError::WrongType { field, expected }
}

impl<'a> Reader<'a> {
    /// A reader after the payload's array header, and the array's item count, which must be
    /// at least `min` (`ValidateArraySize`).
    fn envelope(
        input: &'a Bytes,
        message: &'static str,
        min: usize,
    ) -> Result<(Self, usize), BackplaneProtocolError> {
        let mut reader = Self { input, pos: 0 };
        let count = reader.array_len(message)?;
        if count < min {
            return Err(BackplaneProtocolError::InsufficientItems { message });
        }
        Ok((reader, count))
    }

    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes' range in `input`, or [`BackplaneProtocolError::Truncated`].
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, BackplaneProtocolError> {
        if n > self.remaining() {
            return Err(BackplaneProtocolError::Truncated);
        }
        let range = self.pos..self.pos + n;
        self.pos = range.end;
        Ok(range)
    }

    fn marker(&mut self) -> Result<Marker, BackplaneProtocolError> {
        let at = self.take(1)?.start;
        // invariant: `take` checked that `at` is in bounds.
        Ok(Marker::from_u8(self.input[at]))
    }

    /// A big-endian unsigned integer of `width` bytes (at most 8).
    fn uint(&mut self, width: usize) -> Result<u64, BackplaneProtocolError> {
        let range = self.take(width)?;
        // invariant: `take` checked the range.
        Ok(self.input[range]
            .iter()
            .fold(0, |acc, &byte| acc << 8 | u64::from(byte)))
    }

    /// A length of `width` bytes; one beyond `usize` cannot fit in the input either.
    fn len(&mut self, width: usize) -> Result<usize, BackplaneProtocolError> {
        usize::try_from(self.uint(width)?).map_err(|_| BackplaneProtocolError::Truncated)
    }

    fn array_len(&mut self, field: &'static str) -> Result<usize, BackplaneProtocolError> {
        match self.marker()? {
            Marker::FixArray(n) => Ok(n.into()),
            Marker::Array16 => self.len(2),
            Marker::Array32 => self.len(4),
            _ => Err(wrong(field, "Array")),
        }
    }

    fn map_len(&mut self, field: &'static str) -> Result<usize, BackplaneProtocolError> {
        match self.marker()? {
            Marker::FixMap(n) => Ok(n.into()),
            Marker::Map16 => self.len(2),
            Marker::Map32 => self.len(4),
            _ => Err(wrong(field, "Map")),
        }
    }

    /// Any integer form whose value fits in `i64`.
    fn int(
        &mut self,
        field: &'static str,
        expected: &'static str,
    ) -> Result<i64, BackplaneProtocolError> {
        let signed = |value: u64, bits: u32| {
            let shift = 64 - bits;
            // Sign-extends the two's complement value read.
            (value << shift) as i64 >> shift
        };
        match self.marker()? {
            Marker::FixPos(n) => Ok(n.into()),
            Marker::FixNeg(n) => Ok(n.into()),
            Marker::U8 => Ok(self.uint(1)? as i64),
            Marker::U16 => Ok(self.uint(2)? as i64),
            Marker::U32 => Ok(self.uint(4)? as i64),
            Marker::U64 => i64::try_from(self.uint(8)?).map_err(|_| wrong(field, expected)),
            Marker::I8 => Ok(signed(self.uint(1)?, 8)),
            Marker::I16 => Ok(signed(self.uint(2)?, 16)),
            Marker::I32 => Ok(signed(self.uint(4)?, 32)),
            Marker::I64 => Ok(signed(self.uint(8)?, 64)),
            _ => Err(wrong(field, expected)),
        }
    }

    fn int32(&mut self, field: &'static str) -> Result<i32, BackplaneProtocolError> {
        let value = self.int(field, "Int32")?;
        i32::try_from(value).map_err(|_| wrong(field, "Int32"))
    }

    /// A string, or `None` for nil.
    fn str(&mut self, field: &'static str) -> Result<Option<&'a str>, BackplaneProtocolError> {
        let len = match self.marker()? {
            Marker::Null => return Ok(None),
            Marker::FixStr(n) => n.into(),
            Marker::Str8 => self.len(1)?,
            Marker::Str16 => self.len(2)?,
            Marker::Str32 => self.len(4)?,
            _ => return Err(wrong(field, "String")),
        };
        let range = self.take(len)?;
        let input: &'a Bytes = self.input;
        // invariant: `take` checked the range.
        std::str::from_utf8(&input[range])
            .map(Some)
            .map_err(|_| BackplaneProtocolError::InvalidUtf8 { field })
    }

    fn required_str(&mut self, field: &'static str) -> Result<&'a str, BackplaneProtocolError> {
        self.str(field)?.ok_or_else(|| wrong(field, "String"))
    }

    /// Binary data as a slice of the input, or `None` for nil.
    fn bin(&mut self, field: &'static str) -> Result<Option<Bytes>, BackplaneProtocolError> {
        let len = match self.marker()? {
            Marker::Null => return Ok(None),
            Marker::Bin8 => self.len(1)?,
            Marker::Bin16 => self.len(2)?,
            Marker::Bin32 => self.len(4)?,
            _ => return Err(wrong(field, "Binary")),
        };
        let range = self.take(len)?;
        Ok(Some(self.input.slice(range)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signalr::{
        Completion, CompletionOutcome, Headers, Invocation, Payload, msgpack,
    };

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|pair| u8::from_str_radix(pair, 16).unwrap())
            .collect()
    }

    fn bytes(text: &str) -> Bytes {
        Bytes::from(hex(text))
    }

    fn encoded(write: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        write(&mut out);
        out.to_vec()
    }

    /// The dummy protocols of `RedisProtocolTests.cs`: each serializes a message as `2a`.
    fn dummy_serializations() -> Vec<Serialization> {
        ["p1", "p2"]
            .into_iter()
            .map(|name| Serialization {
                protocol: ProtocolName::parse(name),
                bytes: Bytes::from_static(&[0x2a]),
            })
            .collect()
    }

    /// `Clients.All.SendAsync("ReceiveMessage", "hi")`, framed by ringhub's encoder.
    fn receive_hi(protocol: HubProtocol) -> Bytes {
        let message = HubMessage::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: "ReceiveMessage".into(),
            arguments: vec![Payload::string("hi")],
            stream_ids: Vec::new(),
        });
        let mut out = BytesMut::new();
        protocol.encode(&message, &mut out).unwrap();
        out.freeze()
    }

    fn both_protocols() -> BackplaneInvocation {
        BackplaneInvocation::new(
            HubProtocol::ALL
                .into_iter()
                .map(|p| Serialization::new(p, receive_hi(p)))
                .collect(),
        )
    }

    #[test]
    fn stream_chunk_messages_round_trip_and_reject_unknown_kinds() {
        let message = StreamChunkMessage {
            key: "response-42".into(),
            kind: 0,
            data: Bytes::from_static(br#"{"delta":"Hel"}"#),
        };
        let mut out = BytesMut::new();
        message.encode(&mut out);
        assert_eq!(StreamChunkMessage::decode(&out.freeze()).unwrap(), message);
        let mut bad = BytesMut::new();
        StreamChunkMessage { kind: 7, ..message }.encode(&mut bad);
        assert!(StreamChunkMessage::decode(&bad.freeze()).is_err());
    }

    #[test]
    fn key_state_messages_round_trip_and_reject_truncation() {
        let message = KeyStateMessage {
            key_id: 42,
            sequence: 1 << 40,
            event: "NavigationUpdated".into(),
            state: Bytes::from_static(br#"{"view":"home"}"#),
        };
        let mut out = BytesMut::new();
        message.encode(&mut out);
        let bytes = out.freeze();
        assert_eq!(KeyStateMessage::decode(&bytes).unwrap(), message);
        assert!(KeyStateMessage::decode(&bytes.slice(..bytes.len() - 1)).is_err());
    }

    #[test]
    fn acks_use_the_smallest_integer_form_and_decode_back() {
        let vectors = [
            (0, "91 00"),
            (42, "91 2a"),
            (180, "91 cc b4"),
            (384, "91 cd 01 80"),
            (70000, "91 ce 00 01 11 70"),
        ];
        for (id, text) in vectors {
            assert_eq!(encoded(|out| Ack(id).encode(out)), hex(text), "{id}");
            assert_eq!(Ack::decode(&bytes(text)), Ok(Ack(id)), "{text}");
        }
    }

    #[test]
    fn negative_and_extreme_ack_ids_round_trip() {
        for id in [-1, -32, -33, -128, -129, -32768, -32769, i32::MIN, i32::MAX] {
            let payload = Bytes::from(encoded(|out| Ack(id).encode(out)));
            assert_eq!(Ack::decode(&payload), Ok(Ack(id)), "{id}");
        }
    }

    #[test]
    fn group_add_and_remove_commands_match_the_dotnet_vectors() {
        let command = |action| GroupCommand {
            id: 42,
            server_name: "S".into(),
            action,
            group: "G".into(),
            connection_id: "C".into(),
        };
        for (action, text) in [
            (GroupAction::Add, "95 2a a1 53 01 a1 47 a1 43"),
            (GroupAction::Remove, "95 2a a1 53 02 a1 47 a1 43"),
        ] {
            assert_eq!(encoded(|out| command(action).encode(out)), hex(text));
            assert_eq!(GroupCommand::decode(&bytes(text)), Ok(command(action)));
        }
    }

    #[test]
    fn a_group_command_with_a_37_character_server_name_writes_it_as_str8() {
        let command = GroupCommand {
            id: 1,
            server_name: "web1_0123456789abcdef0123456789abcdef".into(),
            action: GroupAction::Add,
            group: "room1".into(),
            connection_id: "conn1".into(),
        };
        let mut expected = hex("95 01 d9 25");
        expected.extend_from_slice(command.server_name.as_bytes());
        expected.extend(hex("01 a5 72 6f 6f 6d 31 a5 63 6f 6e 6e 31"));
        assert_eq!(encoded(|out| command.encode(out)), expected);
        assert_eq!(GroupCommand::decode(&Bytes::from(expected)), Ok(command));
    }

    #[test]
    fn an_invocation_without_excluded_ids_matches_the_dotnet_vector() {
        let text = "92 90 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a";
        let invocation = BackplaneInvocation::new(dummy_serializations());
        assert_eq!(encoded(|out| invocation.encode(out)), hex(text));
        assert_eq!(BackplaneInvocation::decode(&bytes(text)), Ok(invocation));
    }

    #[test]
    fn an_invocation_with_one_excluded_id_matches_the_dotnet_vector() {
        let text = "92 91 a1 61 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a";
        let invocation = BackplaneInvocation {
            excluded_ids: vec!["a".into()],
            ..BackplaneInvocation::new(dummy_serializations())
        };
        assert_eq!(encoded(|out| invocation.encode(out)), hex(text));
        let decoded = BackplaneInvocation::decode(&bytes(text)).unwrap();
        assert!(decoded.is_excluded("a") && !decoded.is_excluded("b"));
        assert_eq!(decoded, invocation);
    }

    #[test]
    fn receive_message_hi_to_all_in_json_and_messagepack_is_the_105_byte_payload() {
        #[rustfmt::skip]
        let expected = [
            "92 90 82",
            "a4 6a 73 6f 6e c4 38",
            "7b 22 74 79 70 65 22 3a 31 2c 22 74 61 72 67 65 74 22 3a 22 52 65 63 65 69 76 65 4d",
            "65 73 73 61 67 65 22 2c 22 61 72 67 75 6d 65 6e 74 73 22 3a 5b 22 68 69 22 5d 7d 1e",
            "ab 6d 65 73 73 61 67 65 70 61 63 6b c4 19",
            "18 96 01 80 c0 ae 52 65 63 65 69 76 65 4d 65 73 73 61 67 65 91 a2 68 69 90",
        ]
        .map(hex)
        .concat();
        assert_eq!(expected.len(), 105);
        assert_eq!(encoded(|out| both_protocols().encode(out)), expected);
        let decoded = BackplaneInvocation::decode(&Bytes::from(expected)).unwrap();
        assert_eq!(decoded, both_protocols());
    }

    #[test]
    fn all_except_conn_a_starts_with_the_excluded_id_array() {
        let invocation = BackplaneInvocation {
            excluded_ids: vec!["connA".into()],
            ..both_protocols()
        };
        let payload = encoded(|out| invocation.encode(out));
        assert!(payload.starts_with(&hex("92 91 a5 63 6f 6e 6e 41 82")));
        assert_eq!(payload.len(), 105 + 6);
    }

    #[test]
    fn a_client_result_invocation_has_four_items_with_the_id_and_return_channel_last() {
        // §7.3's example sizes: an 88-byte JSON frame, a 22-character id and a 36-byte channel.
        let id = "AAECAwQFBgcICQoLDA0ODw";
        let json = format!(
            "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"GetMessage\",\"arguments\":[]}}\x1e"
        );
        let channel = "ChatHub:internal:return:web1_0123456";
        assert_eq!((json.len(), id.len(), channel.len()), (88, 22, 36));
        let invocation = BackplaneInvocation {
            excluded_ids: Vec::new(),
            serializations: vec![Serialization::new(
                HubProtocol::Json,
                Bytes::from(json.clone()),
            )],
            client_result: Some(ClientResultRoute {
                invocation_id: id.into(),
                return_channel: channel.into(),
            }),
        };
        let expected = [
            hex("94 90 81 a4 6a 73 6f 6e c4 58"),
            json.into_bytes(),
            hex("b6"),
            id.as_bytes().to_vec(),
            hex("d9 24"),
            channel.as_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(encoded(|out| invocation.encode(out)), expected);
        assert_eq!(
            BackplaneInvocation::decode(&Bytes::from(expected)),
            Ok(invocation)
        );
    }

    #[test]
    fn a_returned_json_completion_is_the_protocol_name_and_the_framed_completion_as_bin8() {
        let id = "AAECAwQFBgcICQoLDA0ODw";
        let json = format!("{{\"type\":3,\"invocationId\":\"{id}\",\"result\":\"ok\"}}\x1e");
        assert_eq!(json.len(), 65);
        let returned = ReturnedCompletion {
            protocol: HubProtocol::Json.into(),
            completion: Bytes::from(json.clone()),
        };
        let expected = [hex("92 a4 6a 73 6f 6e c4 41"), json.into_bytes()].concat();
        assert_eq!(encoded(|out| returned.encode(out)), expected);
        let decoded = ReturnedCompletion::decode(&Bytes::from(expected)).unwrap();
        assert_eq!(decoded, returned);
        let Ok(HubMessage::Completion(completion)) = decoded.message() else {
            panic!("not a completion")
        };
        assert_eq!(completion.invocation_id, id);
        let CompletionOutcome::Result(result) = completion.outcome else {
            panic!("no result")
        };
        assert_eq!(result.as_string().as_deref(), Some("ok"));
    }

    #[test]
    fn decoded_serializations_are_slices_of_the_received_payload() {
        let payload = Bytes::from(encoded(|out| both_protocols().encode(out)));
        let decoded = BackplaneInvocation::decode(&payload).unwrap();
        let whole = payload.as_ptr_range();
        for serialization in &decoded.serializations {
            let part = serialization.bytes.as_ptr_range();
            assert!(whole.start <= part.start && part.end <= whole.end);
        }
        let returned = ReturnedCompletion {
            protocol: HubProtocol::MessagePack.into(),
            completion: receive_hi(HubProtocol::MessagePack),
        };
        let payload = Bytes::from(encoded(|out| returned.encode(out)));
        let decoded = ReturnedCompletion::decode(&payload).unwrap();
        assert!(
            payload
                .as_ptr_range()
                .contains(&decoded.completion.as_ptr())
        );
    }

    #[test]
    fn large_strings_maps_and_blobs_switch_to_the_wider_forms() {
        let blob = |n: usize| Bytes::from(vec![7u8; n]);
        let invocation = BackplaneInvocation {
            excluded_ids: (0..16)
                .map(|i| format!("c{i}"))
                .chain(["x".repeat(300)])
                .collect(),
            serializations: (0..16)
                .map(|i| Serialization {
                    protocol: ProtocolName::parse(&format!("p{i}")),
                    bytes: blob(if i == 0 { 256 } else { 70_000 }),
                })
                .collect(),
            client_result: Some(ClientResultRoute {
                invocation_id: "i".repeat(70_000),
                return_channel: String::new(),
            }),
        };
        let payload = Bytes::from(encoded(|out| invocation.encode(out)));
        assert_eq!(payload[..4], hex("94 dc 00 11"));
        assert!(payload.windows(3).any(|w| w == hex("da 01 2c")));
        assert!(payload.windows(3).any(|w| w == hex("de 00 10")));
        assert!(payload.windows(3).any(|w| w == hex("c5 01 00")));
        assert!(payload.windows(5).any(|w| w == hex("c6 00 01 11 70")));
        assert!(payload.windows(5).any(|w| w == hex("db 00 01 11 70")));
        assert_eq!(BackplaneInvocation::decode(&payload), Ok(invocation));
    }

    #[test]
    fn the_writer_picks_the_same_forms_as_rmp_for_every_boundary() {
        let ints = [
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX.into(),
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN.into(),
            i64::MIN,
        ];
        for value in ints {
            let mut theirs = Vec::new();
            rmp::encode::write_sint(&mut theirs, value).unwrap();
            assert_eq!(encoded(|out| put_int(out, value)), theirs, "{value}");
        }
        for len in [0, 15, 16, 31, 32, 255, 256, 65535, 65536] {
            let (mut array, mut map, mut str, mut bin) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            rmp::encode::write_array_len(&mut array, len).unwrap();
            rmp::encode::write_map_len(&mut map, len).unwrap();
            rmp::encode::write_str_len(&mut str, len).unwrap();
            rmp::encode::write_bin_len(&mut bin, len).unwrap();
            let len = len as usize;
            assert_eq!(encoded(|out| put_array_len(out, len)), array, "array {len}");
            assert_eq!(encoded(|out| put_map_len(out, len)), map, "map {len}");
            let text = "x".repeat(len);
            assert_eq!(
                encoded(|out| put_str(out, &text))[..str.len()],
                str,
                "str {len}"
            );
            let blob = vec![0; len];
            assert_eq!(
                encoded(|out| put_bin(out, &blob))[..bin.len()],
                bin,
                "bin {len}"
            );
        }
    }

    #[test]
    fn readers_accept_longer_arrays_other_integer_forms_and_nils() {
        // Extra items (even malformed ones) are not read.
        assert_eq!(Ack::decode(&bytes("93 2a c1 c1")), Ok(Ack(42)));
        assert_eq!(Ack::decode(&bytes("91 d0 ff")), Ok(Ack(-1)));
        assert_eq!(
            Ack::decode(&bytes("91 cf 00 00 00 00 00 00 00 05")),
            Ok(Ack(5))
        );
        assert_eq!(Ack::decode(&bytes("dc 00 01 d2 00 00 00 07")), Ok(Ack(7)));
        assert_eq!(Ack::decode(&bytes("91 2a ff ff")), Ok(Ack(42)));
        assert_eq!(
            GroupCommand::decode(&bytes("96 2a a1 53 cc 02 a1 47 a1 43 c0")).map(|c| c.action),
            Ok(GroupAction::Remove)
        );
        // A third item is ignored; nil excluded ids are skipped; a nil blob is empty.
        let decoded =
            BackplaneInvocation::decode(&bytes("93 92 c0 a1 61 81 a2 70 31 c0 2a")).unwrap();
        assert_eq!(decoded.excluded_ids, vec!["a".to_owned()]);
        assert_eq!(decoded.serializations[0].bytes, Bytes::new());
        assert_eq!(decoded.client_result, None);
        // Four items with a nil return channel: not a client-result invocation.
        let decoded = BackplaneInvocation::decode(&bytes("94 90 80 a1 31 c0")).unwrap();
        assert_eq!(decoded.client_result, None);
        // The map form array16/map16/str8 a non-.NET writer might use.
        let decoded =
            BackplaneInvocation::decode(&bytes("dc 00 02 90 de 00 01 d9 02 70 31 c5 00 01 2a"))
                .unwrap();
        assert_eq!(
            decoded,
            BackplaneInvocation {
                serializations: vec![Serialization {
                    protocol: ProtocolName::parse("p1"),
                    bytes: Bytes::from_static(&[0x2a]),
                }],
                ..BackplaneInvocation::default()
            }
        );
        let returned = ReturnedCompletion::decode(&bytes("92 a4 6a 73 6f 6e c0")).unwrap();
        assert_eq!(returned.completion, Bytes::new());
    }

    #[test]
    fn truncated_payloads_fail_as_truncated_at_every_length() {
        let invocation = BackplaneInvocation {
            excluded_ids: vec!["connA".into()],
            client_result: Some(ClientResultRoute {
                invocation_id: "id".into(),
                return_channel: "H:internal:return:s".into(),
            }),
            ..both_protocols()
        };
        let command = GroupCommand {
            id: 70000,
            server_name: "S".into(),
            action: GroupAction::Add,
            group: "G".into(),
            connection_id: "C".into(),
        };
        let returned = ReturnedCompletion {
            protocol: HubProtocol::Json.into(),
            completion: receive_hi(HubProtocol::Json),
        };
        type Check = fn(&Bytes) -> Option<BackplaneProtocolError>;
        let checks: [(Bytes, Check); 4] = [
            (Bytes::from(encoded(|out| invocation.encode(out))), |b| {
                BackplaneInvocation::decode(b).err()
            }),
            (Bytes::from(encoded(|out| command.encode(out))), |b| {
                GroupCommand::decode(b).err()
            }),
            (Bytes::from(encoded(|out| Ack(70000).encode(out))), |b| {
                Ack::decode(b).err()
            }),
            (Bytes::from(encoded(|out| returned.encode(out))), |b| {
                ReturnedCompletion::decode(b).err()
            }),
        ];
        for (payload, check) in checks {
            assert_eq!(check(&payload), None);
            for len in 0..payload.len() {
                assert_eq!(
                    check(&payload.slice(..len)),
                    Some(BackplaneProtocolError::Truncated),
                    "{len} of {payload:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_types_and_short_arrays_fail_with_the_field_named() {
        use BackplaneProtocolError::{InsufficientItems, InvalidUtf8, UnknownGroupAction};
        type Decoder = fn(&Bytes) -> Option<BackplaneProtocolError>;
        let ack: Decoder = |b| Ack::decode(b).err();
        let invocation: Decoder = |b| BackplaneInvocation::decode(b).err();
        let group: Decoder = |b| GroupCommand::decode(b).err();
        let returned: Decoder = |b| ReturnedCompletion::decode(b).err();
        let wrong = |field, expected| BackplaneProtocolError::WrongType { field, expected };
        let short = |message| InsufficientItems { message };
        #[rustfmt::skip]
        let cases = [
            (ack, "2a", wrong("Ack", "Array")),
            (ack, "81 00 00", wrong("Ack", "Array")),
            (ack, "90", short("Ack")),
            (ack, "91 a1 31", wrong("id", "Int32")),
            (ack, "91 c1", wrong("id", "Int32")),
            (ack, "91 ce 80 00 00 00", wrong("id", "Int32")),
            (ack, "91 d3 80 00 00 00 00 00 00 00", wrong("id", "Int32")),
            (ack, "91 cf ff ff ff ff ff ff ff ff", wrong("id", "Int32")),
            (invocation, "91 90", short("Invocation")),
            (invocation, "92 80 80", wrong("excludedIds", "Array")),
            (invocation, "92 91 2a 80", wrong("excludedIds", "String")),
            (invocation, "92 91 a2 ff fe 80", InvalidUtf8 { field: "excludedIds" }),
            (invocation, "92 90 90", wrong("serializations", "Map")),
            (invocation, "92 90 81 2a c4 00", wrong("protocolName", "String")),
            (invocation, "92 90 81 c0 c4 00", wrong("protocolName", "String")),
            (invocation, "92 90 81 a1 70 a1 2a", wrong("serializedMessage", "Binary")),
            (invocation, "94 90 80 2a a1 63", wrong("invocationId", "String")),
            (invocation, "94 90 80 a1 31 2a", wrong("returnChannel", "String")),
            (group, "94 2a a1 53 01 a1 47", short("GroupCommand")),
            (group, "95 a1 31 a1 53 01 a1 47 a1 43", wrong("id", "Int32")),
            (group, "95 2a c0 01 a1 47 a1 43", wrong("serverName", "String")),
            (group, "95 2a a1 53 cd 01 00 a1 47 a1 43", wrong("action", "Byte")),
            (group, "95 2a a1 53 ff a1 47 a1 43", wrong("action", "Byte")),
            (group, "95 2a a1 53 c3 a1 47 a1 43", wrong("action", "Byte")),
            (group, "95 2a a1 53 03 a1 47 a1 43", UnknownGroupAction(3)),
            (group, "95 2a a1 53 00 a1 47 a1 43", UnknownGroupAction(0)),
            (group, "95 2a a1 53 01 2a a1 43", wrong("groupName", "String")),
            (group, "95 2a a1 53 01 a1 47 c0", wrong("connectionId", "String")),
            (returned, "91 a4 6a 73 6f 6e", short("CompletionMessage")),
            (returned, "92 2a c4 00", wrong("protocolName", "String")),
            (returned, "92 a1 6a a1 78", wrong("completion", "Binary")),
        ];
        for (decode, text, expected) in cases {
            assert_eq!(decode(&bytes(text)), Some(expected), "{text}");
        }
    }

    #[test]
    fn huge_declared_counts_and_lengths_fail_without_allocating_for_them() {
        // array32 / map32 of 4 billion items, str32 / bin32 of 4 GB, in a few bytes.
        let cases = [
            "92 dd ff ff ff ff a1 61",
            "92 90 df ff ff ff ff a1 70 c4 00",
            "92 90 81 a1 70 c6 ff ff ff ff 2a",
            "92 91 db ff ff ff ff 61",
            "dd ff ff ff ff 90 80",
        ];
        for text in cases {
            assert_eq!(
                BackplaneInvocation::decode(&bytes(text)),
                Err(BackplaneProtocolError::Truncated),
                "{text}"
            );
        }
        assert_eq!(
            ReturnedCompletion::decode(&bytes("92 a4 6a 73 6f 6e c6 7f ff ff ff 00")),
            Err(BackplaneProtocolError::Truncated)
        );
        assert_eq!(
            GroupCommand::decode(&bytes("95 2a db ff ff ff ff 53")),
            Err(BackplaneProtocolError::Truncated)
        );
    }

    #[test]
    fn message_for_a_protocol_the_publisher_included_shares_its_bytes() {
        let invocation = both_protocols();
        for protocol in HubProtocol::ALL {
            let bytes = invocation.message_for(protocol).unwrap();
            assert_eq!(
                bytes.as_ptr(),
                invocation.serialization(protocol).unwrap().as_ptr()
            );
        }
    }

    #[test]
    fn message_for_a_missing_protocol_is_transcoded_from_one_that_is_there() {
        let json_only = BackplaneInvocation::new(vec![
            Serialization {
                protocol: ProtocolName::parse("custom"),
                bytes: Bytes::from_static(b"?"),
            },
            Serialization::new(HubProtocol::Json, receive_hi(HubProtocol::Json)),
        ]);
        assert_eq!(
            json_only.message_for(HubProtocol::MessagePack),
            Ok(receive_hi(HubProtocol::MessagePack))
        );
        let msgpack_only = BackplaneInvocation::new(vec![Serialization::new(
            HubProtocol::MessagePack,
            receive_hi(HubProtocol::MessagePack),
        )]);
        assert_eq!(
            msgpack_only.message_for(HubProtocol::Json),
            Ok(receive_hi(HubProtocol::Json))
        );
        let unusable = BackplaneInvocation::new(dummy_serializations());
        assert_eq!(
            unusable.message_for(HubProtocol::Json),
            Err(BackplaneProtocolError::ProtocolUnavailable)
        );
    }

    #[test]
    fn a_returned_completion_in_an_unknown_protocol_cannot_be_read() {
        let returned = ReturnedCompletion {
            protocol: ProtocolName::parse("blazorpack"),
            completion: Bytes::from_static(&[0x2a]),
        };
        assert_eq!(
            returned.message(),
            Err(BackplaneProtocolError::ProtocolUnavailable)
        );
        assert_eq!(returned.protocol.as_str(), "blazorpack");
        let msgpack_void = ReturnedCompletion {
            protocol: HubProtocol::MessagePack.into(),
            completion: bytes("06 94 03 80 a1 31 02"),
        };
        assert!(matches!(
            msgpack_void.message(),
            Ok(HubMessage::Completion(Completion {
                outcome: CompletionOutcome::Void,
                ..
            }))
        ));
        // The framed completion decodes with the hub protocol codec (msgpack::decode here).
        assert!(msgpack::decode(&msgpack_void.completion, 100).is_ok());
    }
}
