//! Merkle tree (placeholder).
