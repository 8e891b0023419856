//! Shared helpers for the UltraCore benchmarks (workload builders).
