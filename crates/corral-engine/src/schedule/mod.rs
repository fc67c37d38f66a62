//! Scheduled jobs (the `[[schedule]]` entries of the host config).

pub mod calendar;

pub use calendar::{Calendar, CalendarError};
