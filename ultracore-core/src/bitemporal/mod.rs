//! TEMPORARY naive stand-in (replaced by the real index).
pub mod index;
pub mod timeline;
