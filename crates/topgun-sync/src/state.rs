//! The client's connectivity state.

use std::fmt;

/// Where a client is in its life, as TopGun names it.
///
/// `Initial` → `Offline` once the store is open; with a server configured,
/// `Offline` → `Connecting` → `Syncing` → `Online`, and back to `Offline`
/// when the connection drops (then `Connecting` again after a backoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening the store and warming up.
    Initial,
    /// Usable locally; not connected.
    Offline,
    /// Opening a connection to the server.
    Connecting,
    /// Connected; authenticating, pushing pending ops, pulling deltas.
    Syncing,
    /// Every pending op sent so far is acknowledged and every open map is
    /// pulled; changes now flow both ways in real time.
    Online,
}

impl ConnectionState {
    /// TopGun's name for the state: `INITIAL`, `OFFLINE`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "INITIAL",
            Self::Offline => "OFFLINE",
            Self::Connecting => "CONNECTING",
            Self::Syncing => "SYNCING",
            Self::Online => "ONLINE",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
