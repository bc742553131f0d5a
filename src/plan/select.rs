//! Seeded selection of targets by mode. (Stub; being written.)
