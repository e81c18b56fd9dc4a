//! Which store holds each table the SQL endpoints can read, so a result cache can key an
//! answer on the [`DataVersion`] of every table a statement reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{DataVersion, EventStore};

/// Tables by name (lower case, as unquoted SQL identifiers are normalized), and a generation
/// of the table set itself (bumped when a table is added or removed, which changes catalog
/// answers such as `information_schema.tables`). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TableVersions {
    tables: Arc<RwLock<HashMap<String, Arc<dyn EventStore>>>>,
    catalog: Arc<AtomicU64>,
}

impl TableVersions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` is read from `store` from now on.
    pub fn register(&self, name: &str, store: Arc<dyn EventStore>) {
        self.tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), store);
        self.catalog.fetch_add(1, Ordering::AcqRel);
    }

    /// `name` is gone.
    pub fn remove(&self, name: &str) {
        self.tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        self.catalog.fetch_add(1, Ordering::AcqRel);
    }

    /// The version of table `name`, if it is one of the Hub's tables.
    pub fn version(&self, name: &str) -> Option<DataVersion> {
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(|s| s.data_version())
    }

    /// Generation of the table set.
    pub fn catalog_generation(&self) -> u64 {
        self.catalog.load(Ordering::Acquire)
    }
}
