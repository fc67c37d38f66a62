//! Spec and wire types for corral.
//!
//! This crate is deliberately small and free of I/O: it holds the VM spec (one TOML document
//! per VM), the human-readable size and duration types used in specs and config, the name
//! rules, and the JSON shapes that the CLI prints with `--json` (and that the REST API will
//! serve). Everything that talks to QEMU or the disk lives in `corral-engine`.

pub mod alert;
pub mod auth;
mod disk;
pub mod history;
pub mod human;
pub mod job;
pub mod metrics;
pub mod name;
#[cfg(feature = "openapi")]
mod openapi;
pub mod schedule;
pub mod spec;
pub mod status;

pub use alert::{
    AlertEvent, AlertInfo, AlertKind, AlertRuleSpec, AlertUnit, AlertsSettings, Comparison, MailNotify, MailTls,
    NotificationOutcome, NotifyConfig, Severity, ThresholdValue, WebhookNotify, WebhookPayload,
};
pub use auth::Role;
pub use disk::{ChainLayer, CloneReport, ClonedDisk, CommitReport, ConsolidateItem, DiskChain, ImageInfo};
pub use history::{HistoryRange, HistorySeries, MetricsHistory, SeriesUnit, UnknownRange};
pub use human::{ByteSize, HumanDuration, ParseHumanError, Percent};
pub use job::{JobInfo, JobState, TransferBytes};
pub use metrics::{
    DiskIo, FsUsage, HostMetrics, Metric, MetricUnit, MetricsReport, MetricsSummary, NicIo, UnknownMetric, VcpuTime,
    VmCpu, VmMemory, VmMetrics,
};
pub use name::{NameError, VmName};
pub use schedule::{
    CalendarCheck, ScheduleAction, ScheduleOutcome, ScheduleRun, ScheduleSpec, ScheduleSpecError, ScheduleStatus,
    ScheduleTarget, Selection,
};
pub use spec::{
    Accel, BackupSpec, BootFrom, BootSpec, DiskBus, DiskFormat, DiskRole, DiskSpec, DisplayMode, DisplaySpec, MacAddr,
    Machine, NetworkMode, NetworkSpec, NicModel, PortForward, Proto, SpecError, VmSpec,
};
pub use status::{RunState, StopOutcome, VmStatus};
