//! Window functions, one per file (plus the shared `anomaly_common`).

pub mod anomaly;
pub mod anomaly_common;
pub mod anomaly_robust;
pub mod anomaly_seasonal;
