//! The time stamps trustform writes (journal, lock, restart annotations) and reads
//! (certificates' validity, API objects): RFC 3339, UTC.

/// Now, RFC 3339.
pub fn now() -> String {
    format(time::OffsetDateTime::now_utc())
}

/// A time, RFC 3339.
pub fn format(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An RFC 3339 time stamp; `None` when it is not one.
pub fn parse(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}
