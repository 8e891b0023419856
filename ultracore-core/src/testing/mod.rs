//! Test utilities (filled in below).
