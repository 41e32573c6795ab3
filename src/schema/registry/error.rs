//! Registry errors, with the codes Confluent's REST API and qwire's frames give them.

use crate::schema::error::InvalidSchema;

/// Why a registry operation failed. [`RegistryError::error_code`] is Confluent's
/// `error_code` (its HTTP status is the first three digits), [`RegistryError::wire_code`]
/// the qwire protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The version asked for.
        version: String,
    },
    /// 40403.
    #[error("Schema {0} not found")]
    SchemaNotFound(u32),
    /// 40403, for a lookup by text.
    #[error("Schema not found")]
    SchemaTextNotFound,
    /// 40404: the subject was already soft-deleted.
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405: a permanent delete before a soft delete.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406: the version was already soft-deleted.
    #[error("Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// 40407: a permanent delete of a version that was not soft-deleted first.
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 409: the schema breaks the subject's compatibility level.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", messages.join(", "))]
    Incompatible {
        /// The subject.
        subject: String,
        /// One entry per problem.
        messages: Vec<String>,
    },
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(#[from] InvalidSchema),
    /// 42201: schema references are not supported by this registry.
    #[error("Invalid schema: schema references are not supported by this registry")]
    ReferencesUnsupported,
    /// 42201: an empty subject name or one with control characters.
    #[error("Invalid subject '{0}': a subject is 1 to 255 characters without control characters")]
    InvalidSubject(String),
    /// 42202.
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    /// 42203.
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibility(String),
    /// 50001: the store failed; the operation did not take effect (or, for a write whose
    /// sync failed, may have: the registry then refuses writes until restarted).
    #[error("Error in the backend data store: {0}")]
    Store(String),
}

impl RegistryError {
    /// Confluent's `error_code`.
    pub fn error_code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound(_) | RegistryError::SchemaTextNotFound => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted { .. } => 40406,
            RegistryError::VersionNotSoftDeleted { .. } => 40407,
            RegistryError::SubjectConfigNotFound(_) => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_)
            | RegistryError::ReferencesUnsupported
            | RegistryError::InvalidSubject(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibility(_) => 42203,
            RegistryError::Store(_) => 50001,
        }
    }

    /// The HTTP status Confluent answers with.
    pub fn http_status(&self) -> u16 {
        let code = self.error_code();
        if code < 1000 {
            code as u16
        } else {
            (code / 100) as u16
        }
    }

    /// The qwire protocol error code (see [`crate::protocol::schema::codes`]).
    pub fn wire_code(&self) -> u16 {
        use crate::protocol::schema::codes;
        match self {
            RegistryError::SubjectNotFound(_) => codes::SUBJECT_NOT_FOUND,
            RegistryError::VersionNotFound { .. } => codes::VERSION_NOT_FOUND,
            RegistryError::SchemaNotFound(_) | RegistryError::SchemaTextNotFound => codes::SCHEMA_NOT_FOUND,
            RegistryError::InvalidSchema(_)
            | RegistryError::ReferencesUnsupported
            | RegistryError::InvalidSubject(_) => codes::INVALID_SCHEMA,
            RegistryError::Incompatible { .. } => codes::INCOMPATIBLE_SCHEMA,
            RegistryError::InvalidVersion(_) | RegistryError::InvalidCompatibility(_) => codes::INVALID_ARGUMENT,
            RegistryError::SubjectSoftDeleted(_)
            | RegistryError::SubjectNotSoftDeleted(_)
            | RegistryError::VersionSoftDeleted { .. }
            | RegistryError::VersionNotSoftDeleted { .. } => codes::DELETE_REFUSED,
            RegistryError::SubjectConfigNotFound(_) => codes::CONFIG_NOT_FOUND,
            RegistryError::Store(_) => codes::STORAGE_ERROR,
        }
    }
}
