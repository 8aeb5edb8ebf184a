//! Wire protocol messages and their MessagePack codec (placeholder until the codec lands).
