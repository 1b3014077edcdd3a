//! Image references, normalized as Docker does (owned by the pull issue).
