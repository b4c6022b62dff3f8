//! Redis engine for wsu clusters (work in progress).
