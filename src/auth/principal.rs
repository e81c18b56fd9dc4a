//! Who is asking and what they may do.

use serde::{Deserialize, Serialize};

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `POST` events only.
    Ingest,
    /// SQL and the `GET` routes.
    Read,
    /// Everything: continuous queries, exports, snapshot tables, keys.
    Admin,
}

impl Role {
    /// Whether this role may perform `access`.
    pub fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::Admin, _) | (Self::Read, Access::Read) | (Self::Ingest, Access::Ingest)
        )
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Self::Ingest),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(format!("role `{other}`: expected read, ingest or admin")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Posts events.
    Ingest,
    /// Reads (SQL, `GET`).
    Read,
    /// Changes the service (continuous queries, exports, snapshot tables, keys).
    Admin,
}

impl Access {
    /// The role a request of this kind needs at least.
    pub fn needs(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key name, JWT subject or wire user (for logs and the audit trail).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The tenant it is bound to: it sees and writes only that tenant's rows.
    pub tenant: Option<String>,
}

impl Principal {
    /// The caller when authentication is off: admin over every tenant.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
            tenant: None,
        }
    }
}
