//! Connection-level messages: authentication, device registration,
//! keep-alive and server errors. All are flat (fields beside `type`)
//! except `ERROR`, whose fields sit in `payload`.

use serde::{Deserialize, Serialize};

/// `AUTH` (client → server): the client's credentials. Sent first when the
/// server requires auth; a second `AUTH` on an authenticated connection
/// must be harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// The bearer token (TopGun: a JWT).
    pub token: String,
    /// Protocol version the client speaks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient::opt_u32"
    )]
    pub protocol_version: Option<u32>,
    /// Device token from an earlier `DEVICE_ACK`/`AUTH_ACK` (TopGun's TS client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// `AUTH_REQUIRED` (server → client): sent on connect when auth is on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequired {
    /// Why, e.g. `"token expired"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `AUTH_ACK` (server → client): auth accepted; the client may sync.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthAck {
    /// Protocol version the server speaks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient::opt_u32"
    )]
    pub protocol_version: Option<u32>,
    /// The authenticated user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The device id the server assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// A device token for later connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// `AUTH_FAIL` (server → client): auth refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthFail {
    /// Human-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP-like status, e.g. 401.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient::opt_u32"
    )]
    pub code: Option<u32>,
}

/// `DEVICE_HELLO` (client → server): how TopGun's TS client opens a
/// connection when it has no auth token. It then waits up to 500 ms for a
/// `DEVICE_ACK` (or any other frame).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceHello {
    /// The token of an earlier `DEVICE_ACK`, if the client has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// `DEVICE_ACK` (server → client): answer to `DEVICE_HELLO`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceAck {
    /// The device id the server assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// A token the client presents next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// `PING` (client → server): keep-alive. TopGun's client pings every 5 s
/// and reconnects after 15 s without a `PONG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ping {
    /// The client's wall clock, in ms since the Unix epoch.
    #[serde(deserialize_with = "crate::flex::u64")]
    pub timestamp: u64,
}

/// `PONG` (server → client): reply to `PING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The `timestamp` of the `PING` answered.
    #[serde(deserialize_with = "crate::flex::u64")]
    pub timestamp: u64,
    /// The server's wall clock in ms, so the client can estimate skew.
    #[serde(deserialize_with = "crate::flex::u64")]
    pub server_time: u64,
}

/// `ERROR` payload (server → client). TopGun's errors name no op or batch:
/// 429 rate limit or overload, 413 too large, 500 storage failure; after
/// one, a client resends its unacked batches with backoff. This project's
/// server also answers an unknown message type with 400 or 501.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerError {
    /// HTTP-like status code.
    #[serde(deserialize_with = "crate::flex::u32")]
    pub code: u32,
    /// Human-readable message.
    pub message: String,
    /// Any further detail (a string in TopGun's fixtures, but any value is
    /// allowed). A nil `details` decodes as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<rmpv::Value>,
}
