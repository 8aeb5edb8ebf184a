//! [`Role`]: whether a process holds its data or goes through another.

/// Whether this process holds its data directory (see
/// [`TopGunClientBuilder::shared_dir`](crate::TopGunClientBuilder::shared_dir)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It holds the store (and syncs, when a server is configured).
    Leader,
    /// Another process holds the store; calls go to it.
    Follower,
}

impl Role {
    /// `"leader"` or `"follower"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}
