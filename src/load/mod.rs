//! The load generator. (Stub; being written.)
