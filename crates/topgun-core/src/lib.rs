//! Core types of TopGun for Rust: the hybrid logical clock ([`hlc`]),
//! last-writer-wins records ([`lww`]), the Merkle tree used for delta sync
//! ([`merkle`]) and the wire protocol messages with their MessagePack codec
//! ([`wire`]).
//!
//! This crate does no I/O and reads no clock of its own: time comes in
//! through the [`hlc::Clock`] trait. It compiles for `wasm32-unknown-unknown`
//! as well as native targets, and must not depend on storage, networking or
//! an async runtime.
#![warn(missing_docs)]

mod flex;
pub mod hlc;
pub mod lww;
pub mod merkle;
pub mod wire;

pub use hlc::{Clock, Hlc, HlcError, SystemClock, Timestamp};
pub use lww::LwwRecord;
pub use merkle::{MerkleBuilder, MerkleSums, MerkleTree};
pub use wire::{decode, encode, DecodeError, EncodeError, Message};
