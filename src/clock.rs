//! The time stamps trustform writes (journal, lock, restart annotations): RFC 3339, UTC.

/// Now, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
