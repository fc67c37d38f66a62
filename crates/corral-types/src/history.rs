//! The daemon's metrics history as the API serves it: a time range, the instants of its
//! points and, per metric, the average and the highest value at each point.
//!
//! Points are buckets of `step_ms` that had samples; a bucket without samples has no point.
//! Two neighbouring points further apart than `gap_ms` have no samples between them (the
//! daemon was down, the VM did not exist yet): graphs leave a gap there rather than join
//! them. A value is `null` where the bucket had samples but none for that metric (a stopped
//! VM has no CPU figure; rates need two samples).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How far back a history goes: `hour` and `day` come from the raw samples, `month` from
/// the 5-minute averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HistoryRange {
    #[default]
    Hour,
    Day,
    Month,
}

const MINUTE_MS: i64 = 60_000;

impl HistoryRange {
    pub const ALL: [HistoryRange; 3] = [HistoryRange::Hour, HistoryRange::Day, HistoryRange::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryRange::Hour => "hour",
            HistoryRange::Day => "day",
            HistoryRange::Month => "month",
        }
    }

    /// The span it covers, ending now.
    pub fn span_ms(self) -> i64 {
        match self {
            HistoryRange::Hour => 60 * MINUTE_MS,
            HistoryRange::Day => 24 * 60 * MINUTE_MS,
            HistoryRange::Month => 30 * 24 * 60 * MINUTE_MS,
        }
    }

    /// The width of one point when samples come every `interval_ms`: 360 points of 10 s for
    /// an hour, 288 of 5 minutes for a day, 288 of 2 h 30 min (whole 5-minute averages) for a
    /// month; never finer than the sampling interval.
    pub fn step_ms(self, interval_ms: i64) -> i64 {
        let step = match self {
            HistoryRange::Hour => 10_000,
            HistoryRange::Day => 5 * MINUTE_MS,
            HistoryRange::Month => 150 * MINUTE_MS,
        };
        step.max(interval_ms.max(1))
    }

    /// Neighbouring points further apart than this are drawn with a gap between them: two
    /// and a half steps (or sampling intervals), so the jitter of sampling times leaving
    /// one bucket empty is not taken for a gap.
    pub fn gap_ms(self, interval_ms: i64) -> i64 {
        self.step_ms(interval_ms).max(interval_ms) * 5 / 2
    }
}

impl fmt::Display for HistoryRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A range that is not `hour`, `day` or `month`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown range {0:?}; use hour, day or month")]
pub struct UnknownRange(pub String);

impl FromStr for HistoryRange {
    type Err = UnknownRange;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HistoryRange::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRange(s.to_string()))
    }
}

/// What a series' values are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SeriesUnit {
    /// 0–100 (a VM's process CPU can pass 100: 200 is two host CPUs busy).
    Percent,
    Bytes,
    BytesPerSecond,
    OpsPerSecond,
    /// A plain number (load averages).
    Number,
}

/// One metric over the range: `avg[i]` and `max[i]` belong to `times_ms[i]` of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistorySeries {
    /// A stable name: `cpu_percent`, `rss_bytes`, `disk_write_bytes_per_second`, …
    pub name: String,
    /// What to call it on a graph.
    pub label: String,
    pub unit: SeriesUnit,
    /// The average of the samples in each point's bucket.
    pub avg: Vec<Option<f64>>,
    /// The highest sample in each point's bucket.
    pub max: Vec<Option<f64>>,
}

/// A VM's or the host's history over a range (`GET /api/v1/vms/NAME/metrics`,
/// `GET /api/v1/host/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsHistory {
    /// The VM's name, or `host`.
    pub subject: String,
    pub range: HistoryRange,
    /// Unix milliseconds: the range is `[from_ms, to_ms]`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// The width of one point's bucket.
    pub step_ms: i64,
    /// Neighbouring points further apart than this have no samples between them.
    pub gap_ms: i64,
    /// The daemon's sampling interval.
    pub interval_ms: i64,
    /// Where the points come from: `raw` (every sample) or `average` (5-minute averages,
    /// with the minutes not yet averaged from the raw samples).
    pub source: String,
    /// The start of each point's bucket, oldest first.
    pub times_ms: Vec<i64>,
    pub series: Vec<HistorySeries>,
}

impl MetricsHistory {
    /// The series of that name.
    pub fn series(&self, name: &str) -> Option<&HistorySeries> {
        self.series.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_unknown_ones_name_the_allowed() {
        for r in HistoryRange::ALL {
            assert_eq!(r.as_str().parse::<HistoryRange>().unwrap(), r);
        }
        let e = "week".parse::<HistoryRange>().unwrap_err().to_string();
        assert!(e.contains("\"week\"") && e.contains("hour, day or month"), "{e}");
    }

    #[test]
    fn steps_give_a_few_hundred_points_and_never_beat_the_interval() {
        for (r, points) in [
            (HistoryRange::Hour, 360),
            (HistoryRange::Day, 288),
            (HistoryRange::Month, 288),
        ] {
            assert_eq!(r.span_ms() / r.step_ms(10_000), points, "{r}");
        }
        assert_eq!(HistoryRange::Hour.step_ms(60_000), 60_000);
        assert_eq!(HistoryRange::Hour.gap_ms(10_000), 25_000);
        assert_eq!(HistoryRange::Day.gap_ms(10_000), 750_000);
        // A month's step is whole 5-minute buckets, so averages never straddle two points.
        assert_eq!(HistoryRange::Month.step_ms(10_000) % 300_000, 0);
    }
}
