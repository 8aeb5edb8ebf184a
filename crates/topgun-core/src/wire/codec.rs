//! The MessagePack codec: [`Message`] ⇄ one binary WebSocket frame.
//!
//! Decoding never panics and never recurses without bound, whatever the
//! bytes: a frame is first checked against a size cap, read into a generic
//! [`rmpv::Value`] with a nesting bound, checked for shape (a map with a
//! string `type`), and only then turned into its [`Message`] variant.

use super::bounded::BoundedValue;
use super::message::{Dispatch, UnknownMessage};
use super::Message;
use rmpv::Value;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer};
use std::io;

/// Default cap on a frame's length: 2 MiB, as TopGun's server.
pub const DEFAULT_MAX_FRAME_LEN: usize = 2 * 1024 * 1024;

/// Default cap on a frame's nesting: at most this many maps and arrays on
/// any path from the frame's own map (which counts as one) inward.
///
/// The deepest fixed structure of a known message is 6 (an `OP_BATCH`
/// record's timestamp); the rest is left for application values.
pub const DEFAULT_MAX_DEPTH: usize = 100;

/// Why a frame could not be decoded. The connection may go on: report the
/// error (TopGun answers with `ERROR {code: 400}`) and read the next frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than the configured cap; it was not read.
    /// A sender splits large batches instead.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The configured cap.
        max: usize,
    },
    /// The frame ends in the middle of a MessagePack value (it is empty or
    /// was cut short).
    #[error("frame is truncated: it ends inside a MessagePack value")]
    Truncated,
    /// The bytes are not MessagePack.
    #[error("frame is not valid MessagePack")]
    InvalidMsgpack {
        /// The MessagePack reader's error.
        #[source]
        source: rmpv::decode::Error,
    },
    /// Maps and arrays nest deeper than the configured cap.
    #[error("frame nests more than {max_depth} maps/arrays deep")]
    TooDeep {
        /// The configured cap.
        max_depth: usize,
    },
    /// Bytes follow the frame's MessagePack value; a frame holds exactly one.
    #[error("{extra} bytes follow the frame's MessagePack value")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The frame is MessagePack but not a map; every message is a map.
    #[error("frame is not a MessagePack map")]
    NotAMap,
    /// The frame's map has no `type` entry.
    #[error("frame has no `type` field")]
    MissingType,
    /// The frame's `type` is not a (valid UTF-8) string.
    #[error("frame's `type` field is not a string")]
    TypeNotString,
    /// A known message type whose fields do not match it: a required field
    /// is missing or has the wrong type, or a number is negative,
    /// fractional or out of range where an unsigned integer is expected.
    #[error("malformed {type_name} message: {source}")]
    Malformed {
        /// The frame's `type`.
        type_name: String,
        /// What did not match.
        #[source]
        source: rmpv::ext::Error,
    },
}

impl DecodeError {
    fn from_read(err: rmpv::decode::Error, max_depth: usize) -> Self {
        use rmpv::decode::Error as E;
        match err {
            E::DepthLimitExceeded => DecodeError::TooDeep { max_depth },
            E::InvalidMarkerRead(ref e) | E::InvalidDataRead(ref e)
                if e.kind() == io::ErrorKind::UnexpectedEof =>
            {
                DecodeError::Truncated
            }
            source => DecodeError::InvalidMsgpack { source },
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A value in the message (a record value, query result, topic data,
    /// …) nests so deep that the frame would exceed the configured nesting
    /// cap, which a peer's decoder would refuse.
    #[error("message nests more than {max_depth} maps/arrays deep")]
    TooDeep {
        /// The configured cap.
        max_depth: usize,
    },
    /// The encoded frame is longer than the configured cap; split the
    /// batch or the result set.
    #[error("encoded frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The encoded length in bytes.
        len: usize,
        /// The configured cap.
        max: usize,
    },
    /// A value handed over as MessagePack bytes
    /// ([`Codec::encode_leaf`]) is not one well-formed MessagePack value.
    #[error("the value of {key:?} is not one well-formed MessagePack value")]
    BadValue {
        /// The record's key.
        key: String,
    },
    /// The MessagePack serialiser failed. Writing to memory cannot fail and
    /// the message types of this module always serialise, so this signals
    /// a bug rather than bad input.
    #[error("MessagePack serialisation failed")]
    Serialize {
        /// The serialiser's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
}

/// Frame limits, and encoding and decoding under them. The defaults are
/// [`DEFAULT_MAX_FRAME_LEN`] and [`DEFAULT_MAX_DEPTH`].
///
/// ```
/// use topgun_core::wire::{Codec, DecodeError, Message, Ping};
/// let codec = Codec::new().with_max_frame_len(64);
/// let frame = codec.encode(&Message::Ping(Ping { timestamp: 1 })).unwrap();
/// assert_eq!(codec.decode(&frame).unwrap(), Message::Ping(Ping { timestamp: 1 }));
/// assert!(matches!(codec.decode(&[0; 65]), Err(DecodeError::TooLarge { len: 65, max: 64 })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_frame_len: usize,
    max_depth: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// A codec with the default limits.
    pub const fn new() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }

    /// Sets the longest frame, in bytes, that is decoded or encoded.
    #[must_use]
    pub const fn with_max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
        self
    }

    /// Sets the deepest nesting of maps and arrays accepted (the frame's
    /// own map counts as one). Values below 7 refuse some known messages;
    /// values far above the default risk exhausting small stacks (wasm).
    #[must_use]
    pub const fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// The longest frame accepted, in bytes.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The deepest nesting accepted.
    pub const fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Encodes `msg` as one frame: a MessagePack map with named fields,
    /// absent optional fields omitted. A [`Message::Unknown`] is written
    /// back exactly as it was decoded.
    ///
    /// # Errors
    /// [`EncodeError::TooDeep`] when a value in the message nests beyond
    /// the cap (checked before writing, so a value nested a million levels
    /// deep cannot exhaust the stack); [`EncodeError::TooLarge`] when the
    /// frame exceeds the length cap.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let too_deep = msg
            .values()
            .into_iter()
            .any(|(value, above)| exceeds_depth(value, above, self.max_depth));
        if too_deep {
            return Err(EncodeError::TooDeep {
                max_depth: self.max_depth,
            });
        }
        let bytes =
            rmp_serde::to_vec_named(msg).map_err(|source| EncodeError::Serialize { source })?;
        if bytes.len() > self.max_frame_len {
            return Err(EncodeError::TooLarge {
                len: bytes.len(),
                max: self.max_frame_len,
            });
        }
        Ok(bytes)
    }

    /// Decodes one frame.
    ///
    /// A frame whose `type` is not known decodes to [`Message::Unknown`];
    /// unknown fields of a known message are ignored; integers sent as
    /// whole floats are accepted.
    ///
    /// # Errors
    /// Every [`DecodeError`] variant but none of them panics: too long,
    /// truncated, too deep, trailing bytes, not a map, no string `type`,
    /// or a known type whose fields do not match ([`DecodeError::Malformed`]).
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > self.max_frame_len {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: self.max_frame_len,
            });
        }
        // Fast path: a well-formed frame of a known type decodes straight
        // into its variant. Anything else (and any failure) takes the
        // thorough path below, which builds a value tree and names the
        // problem precisely.
        if let Some(type_name) = super::prescan::frame_type(bytes, self.max_depth) {
            if let Some(Ok(msg)) = Message::dispatch_bytes(type_name, bytes) {
                return Ok(msg);
            }
        }
        let mut rest = bytes;
        // rmpv spends up to two units of its depth budget per nesting level
        // and three on a leaf string; 2·max + 3 admits every frame within
        // the cap, and `decode_value` then checks the cap exactly.
        let budget = self.max_depth.saturating_mul(2).saturating_add(3);
        let value = rmpv::decode::read_value_with_max_depth(&mut rest, budget)
            .map_err(|err| DecodeError::from_read(err, self.max_depth))?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { extra: rest.len() });
        }
        self.decode_value(value)
    }

    /// Turns an already-parsed frame into a [`Message`], with the same
    /// rules as [`Codec::decode`] (the length cap aside).
    ///
    /// # Errors
    /// [`DecodeError::TooDeep`], [`DecodeError::NotAMap`],
    /// [`DecodeError::MissingType`], [`DecodeError::TypeNotString`] or
    /// [`DecodeError::Malformed`].
    pub fn decode_value(&self, value: Value) -> Result<Message, DecodeError> {
        let Value::Map(entries) = &value else {
            return Err(DecodeError::NotAMap);
        };
        let type_name = entries
            .iter()
            .find(|(key, _)| key.as_str() == Some("type"))
            .ok_or(DecodeError::MissingType)?
            .1
            .as_str()
            .ok_or(DecodeError::TypeNotString)?
            .to_owned();
        if exceeds_depth(&value, 0, self.max_depth) {
            return Err(DecodeError::TooDeep {
                max_depth: self.max_depth,
            });
        }
        match Message::dispatch(&type_name, value) {
            Dispatch::Known(Ok(msg)) => Ok(*msg),
            Dispatch::Known(Err(source)) => Err(DecodeError::Malformed { type_name, source }),
            Dispatch::Unknown(raw) => Ok(Message::Unknown(UnknownMessage::new(type_name, raw))),
        }
    }
}

/// Whether `value`, enclosed by `above` maps/arrays, has a path with more
/// than `max` of them. Iterative, so any depth is safe to check.
fn exceeds_depth(value: &Value, above: usize, max: usize) -> bool {
    let mut stack = vec![(value, above)];
    while let Some((value, above)) = stack.pop() {
        let depth = above + 1;
        match value {
            Value::Array(_) | Value::Map(_) if depth > max => return true,
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth))),
            Value::Map(entries) => {
                stack.extend(entries.iter().flat_map(|(k, v)| [(k, depth), (v, depth)]));
            }
            _ => {}
        }
    }
    false
}

/// Encodes `msg` with the default limits; see [`Codec::encode`].
///
/// # Errors
/// [`EncodeError::TooDeep`] or [`EncodeError::TooLarge`] when the message
/// is beyond the default limits.
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    Codec::new().encode(msg)
}

/// Decodes one frame with the default limits; see [`Codec::decode`].
///
/// # Errors
/// See [`DecodeError`].
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    Codec::new().decode(bytes)
}

/// Decodes one frame of at most `max_frame_len` bytes (default nesting
/// cap); see [`Codec::decode`].
///
/// # Errors
/// See [`DecodeError`].
pub fn decode_with_limit(bytes: &[u8], max_frame_len: usize) -> Result<Message, DecodeError> {
    Codec::new().with_max_frame_len(max_frame_len).decode(bytes)
}

impl<'de> Deserialize<'de> for Message {
    /// Reads any self-describing value, refusing nesting beyond
    /// [`DEFAULT_MAX_DEPTH`] as it goes, and applies
    /// [`Codec::decode_value`] with the default limits. For MessagePack
    /// frames prefer [`decode`], which also caps the frame's length and
    /// names each failure.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = BoundedValue {
            levels: DEFAULT_MAX_DEPTH,
        }
        .deserialize(d)?;
        Codec::new().decode_value(value).map_err(de::Error::custom)
    }
}
