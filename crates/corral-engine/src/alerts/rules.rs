//! Alert rules: `[[alert]]` entries compiled into [`AlertRule`]s (metric, threshold in the
//! metric's unit, VM selection, notifiers), the checks of `[[alert]]`, `[alerts]` and
//! `[notify.*]` that run when the host config loads (errors name the entry and its line),
//! and [`thresholds`] for the munin plugin.

use std::time::Duration;

use corral_types::{
    AlertRuleSpec, AlertsSettings, ByteSize, Comparison, Metric, MetricUnit, NotifyConfig, Percent, Severity,
    ThresholdValue,
};

/// The names of the built-in rules; `[[alert]]` rules cannot take them.
pub const BUILTIN_RULES: [&str; 3] = ["crash", "backup_failed", "backup_age"];

/// The shortest `keep_firing_for` a rule gets unless it sets one: a value hovering around
/// the threshold does not resolve and fire again on every sample.
pub const MIN_KEEP_FIRING: Duration = Duration::from_secs(60);

/// A checked `[[alert]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub name: String,
    pub metric: Metric,
    pub comparison: Comparison,
    /// In the metric's unit: percent (0-100), bytes per second, or a plain number.
    pub threshold: f64,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub vms: VmSelector,
    /// Notifier names (already checked against `[notify]`).
    pub notify: Vec<String>,
    pub severity: Severity,
}

/// Which VMs a rule watches: name globs (`*`, `?`) and `tag:NAME`; empty = every VM.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmSelector {
    patterns: Vec<String>,
}

impl VmSelector {
    pub fn new(patterns: Vec<String>) -> VmSelector {
        VmSelector { patterns }
    }

    /// `all`, or the patterns: `web*, tag:prod`.
    pub fn describe(&self) -> String {
        if self.patterns.is_empty() {
            "all".into()
        } else {
            self.patterns.join(", ")
        }
    }

    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        self.patterns.is_empty()
            || self.patterns.iter().any(|p| match p.strip_prefix("tag:") {
                Some(tag) => tags.iter().any(|t| t == tag),
                None => glob(p.as_bytes(), name.as_bytes()),
            })
    }
}

/// `*` any run of characters, `?` one character, anything else itself.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

impl AlertRule {
    /// The threshold as written in the config's unit: `90%`, `50M/s`, `4`.
    pub fn threshold_text(&self) -> String {
        unit_of(self.metric).format(self.threshold)
    }

    /// `cpu above 90% for 5m`.
    pub fn condition_text(&self) -> String {
        let mut s = format!("{} {} {}", self.metric, self.comparison.as_str(), self.threshold_text());
        if !self.for_.is_zero() {
            s.push_str(&format!(" for {}", corral_types::HumanDuration(self.for_)));
        }
        s
    }
}

/// The unit alerts report a metric's values in.
pub fn unit_of(m: Metric) -> corral_types::AlertUnit {
    match m.unit() {
        MetricUnit::Percent => corral_types::AlertUnit::Percent,
        MetricUnit::BytesPerSecond => corral_types::AlertUnit::BytesPerSecond,
        MetricUnit::Number => corral_types::AlertUnit::Number,
    }
}

/// Reads a threshold for `metric`: a percentage (`"90%"`, at most 100%) for percent metrics,
/// a size per second (`"50M"`, `"50M/s"`, or bytes) for disk and network, a number for load.
pub fn parse_threshold(metric: Metric, key: &str, v: &ThresholdValue) -> Result<f64, String> {
    let value = match (metric.unit(), v) {
        (MetricUnit::Percent, ThresholdValue::Text(t)) if t.trim_end().ends_with('%') => {
            let p: Percent = t.parse().map_err(|e| format!("{key} = {v}: {e}"))?;
            if p.0 > 100.0 {
                return Err(format!(
                    "{key} = {v}: a percentage of {metric} is at most 100%; write e.g. {key} = \"90%\""
                ));
            }
            p.0
        }
        (MetricUnit::Percent, _) => {
            return Err(format!(
                "{key} = {v}: {metric} is a percentage; write it with a % sign, e.g. {key} = \"90%\""
            ))
        }
        (MetricUnit::BytesPerSecond, ThresholdValue::Number(n)) if *n >= 0.0 && n.is_finite() => *n,
        (MetricUnit::BytesPerSecond, ThresholdValue::Text(t)) => {
            let t = t.trim();
            let t = t.strip_suffix("/s").unwrap_or(t);
            t.parse::<ByteSize>()
                .map(|b| b.0 as f64)
                .map_err(|_| format!("{key} = {v}: {metric} is bytes per second; write a size such as \"50M\" (= 50 MiB/s) or a number of bytes"))?
        }
        (MetricUnit::Number, ThresholdValue::Number(n)) => *n,
        (MetricUnit::Number, ThresholdValue::Text(t)) => t
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("{key} = {v}: {metric} is a plain number; write e.g. {key} = 4"))?,
        (MetricUnit::BytesPerSecond, ThresholdValue::Number(_)) => f64::NAN,
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{key} = {v}: the threshold must be a number of at least 0"));
    }
    Ok(value)
}

/// A rule name people can write in a config and read in a mail subject.
fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > 80 || name.chars().any(char::is_control) {
        return Err(format!(
            "name = {name:?}: give a name of 1-80 printable characters, e.g. name = \"busy\""
        ));
    }
    if BUILTIN_RULES.contains(&name) {
        return Err(format!(
            "name = {name:?} is the name of a built-in rule ([alerts] {name}); pick another"
        ));
    }
    Ok(())
}

/// The notifiers a rule (or the built-in ones) sends to: the ones named, else every
/// configured one. A name that is not configured is an error.
pub fn resolve_notify(list: Option<&[String]>, notify: &NotifyConfig) -> Result<Vec<String>, String> {
    let configured = notify.names();
    match list {
        None => Ok(configured.iter().map(|s| s.to_string()).collect()),
        Some(list) => {
            for n in list {
                if !configured.contains(&n.as_str()) {
                    let known = if configured.is_empty() {
                        "none is configured: add a [notify.mail] or [notify.webhook] table (docs/alerts.md)".to_string()
                    } else {
                        format!("the configured ones: {}", configured.join(", "))
                    };
                    return Err(format!("notify: {n:?} is not a configured notifier; {known}"));
                }
            }
            let mut v = list.to_vec();
            v.dedup();
            Ok(v)
        }
    }
}

impl AlertRule {
    /// Checks one `[[alert]]` entry against the notifiers there are.
    pub fn compile(spec: &AlertRuleSpec, notify: &NotifyConfig) -> Result<AlertRule, String> {
        let metric: Metric = spec.metric.parse().map_err(|e| format!("metric: {e}"))?;
        let (comparison, key, value) = match (&spec.above, &spec.below) {
            (Some(v), None) => (Comparison::Above, "above", v),
            (None, Some(v)) => (Comparison::Below, "below", v),
            (Some(_), Some(_)) => {
                return Err("give either above or below, not both (make two rules for a band)".into());
            }
            (None, None) => {
                return Err(format!(
                    "needs a threshold: above = … or below = … (e.g. above = {})",
                    match metric.unit() {
                        MetricUnit::Percent => "\"90%\"",
                        MetricUnit::BytesPerSecond => "\"50M\"",
                        MetricUnit::Number => "4",
                    }
                ));
            }
        };
        let threshold = parse_threshold(metric, key, value)?;
        if let Some(vms) = &spec.vms {
            if !metric.per_vm() {
                return Err(format!(
                    "vms: {metric} is a host metric, so the rule watches the host; remove vms"
                ));
            }
            for p in vms {
                let bad = match p.strip_prefix("tag:") {
                    Some(t) => t.trim().is_empty(),
                    None => p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "._-*?".contains(c)),
                };
                if bad {
                    return Err(format!(
                        "vms: {p:?} is neither a VM name pattern (letters, digits, . _ - and the wildcards * ?) nor tag:NAME"
                    ));
                }
            }
        }
        let for_ = spec.for_.map(|d| d.0).unwrap_or_default();
        let rule = AlertRule {
            name: match &spec.name {
                Some(n) => {
                    check_name(n)?;
                    n.clone()
                }
                None => format!("{metric} {} {}", comparison.as_str(), unit_of(metric).format(threshold)),
            },
            metric,
            comparison,
            threshold,
            for_,
            keep_firing_for: spec.keep_firing_for.map(|d| d.0).unwrap_or(for_.max(MIN_KEEP_FIRING)),
            vms: VmSelector::new(spec.vms.clone().unwrap_or_default()),
            notify: resolve_notify(spec.notify.as_deref(), notify)?,
            severity: spec.severity,
        };
        Ok(rule)
    }
}

/// Every `[[alert]]` rule of a config that has been checked (`HostConfig::parse` refuses a
/// bad one, so none is dropped here but in a config built by hand).
pub fn compile_all(specs: &[AlertRuleSpec], notify: &NotifyConfig) -> Vec<AlertRule> {
    specs
        .iter()
        .filter_map(|s| match AlertRule::compile(s, notify) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("alert rule ignored: {e}");
                None
            }
        })
        .collect()
}

/// The warning and critical thresholds of the `above` rules that watch `metric` for this VM
/// (or, for a host metric, the host: `vm_name` and `vm_tags` are then ignored): the lowest of
/// each severity, in the metric's unit (percent 0-100, bytes per second, number). What the
/// munin plugin prints as `warning`/`critical`. `below` rules are left out; see
/// [`threshold_ranges`] for both sides.
pub fn thresholds(
    rules: &[AlertRule],
    vm_name: &str,
    vm_tags: &[String],
    metric: Metric,
) -> (Option<f64>, Option<f64>) {
    let pick = |sev: Severity| {
        watching(rules, vm_name, vm_tags, metric)
            .filter(|r| r.severity == sev && r.comparison == Comparison::Above)
            .map(|r| r.threshold)
            .reduce(f64::min)
    };
    (pick(Severity::Warning), pick(Severity::Critical))
}

/// Like [`thresholds`] with `below` rules too, in munin's range form: `90` (above 90),
/// `10:` (below 10), `10:90` (both); `None` when no rule of that severity watches it.
pub fn threshold_ranges(
    rules: &[AlertRule],
    vm_name: &str,
    vm_tags: &[String],
    metric: Metric,
) -> (Option<String>, Option<String>) {
    let range = |sev: Severity| {
        let of = |c: Comparison| {
            watching(rules, vm_name, vm_tags, metric)
                .filter(move |r| r.severity == sev && r.comparison == c)
                .map(|r| r.threshold)
        };
        let high = of(Comparison::Above).reduce(f64::min);
        let low = of(Comparison::Below).reduce(f64::max);
        match (low, high) {
            (None, None) => None,
            (None, Some(h)) => Some(format!("{h}")),
            (Some(l), None) => Some(format!("{l}:")),
            (Some(l), Some(h)) => Some(format!("{l}:{h}")),
        }
    };
    (range(Severity::Warning), range(Severity::Critical))
}

fn watching<'a>(
    rules: &'a [AlertRule],
    vm_name: &'a str,
    vm_tags: &'a [String],
    metric: Metric,
) -> impl Iterator<Item = &'a AlertRule> + 'a {
    rules
        .iter()
        .filter(move |r| r.metric == metric && (!metric.per_vm() || r.vms.matches(vm_name, vm_tags)))
}

/// The line of the `index`-th `[[alert]]` header in `text`.
fn alert_line(text: &str, index: usize) -> Option<usize> {
    headers(text)
        .filter(|(_, h)| h == "[[alert]]")
        .nth(index)
        .map(|(line, _)| line)
}

/// Table headers of a TOML text with their line numbers, spaces removed: `[[alert]]`.
fn headers(text: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    text.lines().enumerate().filter_map(|(i, l)| {
        let l = l.trim_start();
        if !l.starts_with('[') {
            return None;
        }
        let end = if l.starts_with("[[") {
            l.find("]]").map(|e| e + 2)
        } else {
            l.find(']').map(|e| e + 1)
        }?;
        Some((i + 1, l[..end].chars().filter(|c| !c.is_whitespace()).collect()))
    })
}

/// For a TOML error at byte `offset` of `text` that lies in an `[[alert]]` entry: that entry
/// (`[[alert]] "busy" at line 4`), so an unknown field or a bad duration names its rule.
pub fn toml_error_entry(text: &str, offset: usize) -> Option<String> {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    let (header_line, header) = headers(text).take_while(|(l, _)| *l <= line).last()?;
    if header != "[[alert]]" {
        return None;
    }
    let index = headers(text)
        .filter(|(l, h)| h == "[[alert]]" && *l < header_line)
        .count();
    let name = text
        .lines()
        .skip(header_line)
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        });
    Some(entry(index, name.as_deref(), Some(header_line)))
}

fn entry(index: usize, name: Option<&str>, line: Option<usize>) -> String {
    let who = match name {
        Some(n) => format!("[[alert]] {n:?}"),
        None => format!("[[alert]] number {}", index + 1),
    };
    match line {
        Some(l) => format!("{who} at line {l}"),
        None => who,
    }
}

/// Checks `[[alert]]`, `[alerts]` and `[notify.*]` of a config whose text is `text` (for the
/// lines in errors): every rule compiles, names are unique, notifier names exist, and the
/// notifiers' settings make sense.
pub fn check_config(
    rules: &[AlertRuleSpec],
    settings: &AlertsSettings,
    notify: &NotifyConfig,
    text: &str,
) -> Result<(), String> {
    if let Some(m) = &notify.mail {
        super::notify::mail::check(m).map_err(|e| format!("[notify.mail]: {e}"))?;
    }
    if let Some(w) = &notify.webhook {
        super::notify::webhook::check(w).map_err(|e| format!("[notify.webhook]: {e}"))?;
    }
    resolve_notify(settings.notify.as_deref(), notify).map_err(|e| format!("[alerts] {e}"))?;
    let mut names: Vec<String> = vec![];
    for (i, spec) in rules.iter().enumerate() {
        let at = || entry(i, spec.name.as_deref(), alert_line(text, i));
        let rule = AlertRule::compile(spec, notify).map_err(|e| format!("{}: {e}", at()))?;
        if let Some(first) = names.iter().position(|n| *n == rule.name) {
            let hint = if spec.name.is_none() {
                "; give the rules their own name = \"…\""
            } else {
                ""
            };
            return Err(format!(
                "{}: the name {:?} is already used by the rule at {}{hint}",
                at(),
                rule.name,
                alert_line(text, first)
                    .map(|l| format!("line {l}"))
                    .unwrap_or_else(|| format!("position {}", first + 1))
            ));
        }
        names.push(rule.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    const MAIL: &str =
        "[notify.mail]\nserver = \"smtp.example.org\"\nfrom = \"corral@example.org\"\nto = [\"ops@example.org\"]\n";

    fn err(text: &str) -> String {
        HostConfig::parse(text).unwrap_err()
    }

    #[test]
    fn good_rules_compile_with_their_defaults() {
        let text = format!(
            "{MAIL}\n[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nfor = \"5m\"\nvms = [\"web*\", \"tag:prod\"]\nseverity = \"critical\"\n\n[[alert]]\nmetric = \"disk_write\"\nabove = \"50M\"\n\n[[alert]]\nmetric = \"host_load\"\nabove = 4\nnotify = []\n"
        );
        let c = HostConfig::parse(&text).unwrap();
        let rules = compile_all(&c.alert, &c.notify);
        assert_eq!(rules.len(), 3);
        let busy = &rules[0];
        assert_eq!(
            (busy.threshold, busy.for_, busy.keep_firing_for),
            (90.0, Duration::from_secs(300), Duration::from_secs(300))
        );
        assert_eq!(busy.notify, ["mail"]);
        assert!(
            busy.vms.matches("web1", &[]) && busy.vms.matches("db", &["prod".into()]) && !busy.vms.matches("db", &[])
        );
        assert_eq!(rules[1].name, "disk_write above 50M/s");
        assert_eq!(rules[1].threshold, 50.0 * 1048576.0);
        assert_eq!(rules[1].keep_firing_for, MIN_KEEP_FIRING);
        assert!(rules[1].vms.matches("anything", &[]));
        assert_eq!(rules[2].threshold, 4.0);
        assert!(rules[2].notify.is_empty());
    }

    #[test]
    fn unknown_metric_is_refused_with_entry_line_and_the_known_names() {
        let e = err("data_dir = \"/x\"\n\n[[alert]]\nname = \"busy\"\nmetric = \"cpux\"\nabove = \"90%\"\n");
        assert!(
            e.contains("[[alert]] \"busy\" at line 3")
                && e.contains("unknown metric \"cpux\"")
                && e.contains("host_load"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_its_entry_and_line() {
        let e = err("[[alert]]\nmetric = \"cpu\"\nabove = \"90%\"\n\n[[alert]]\nname = \"slow\"\nmetric = \"memory\"\nabove = \"90%\"\nfor = \"5 minutes\"\n");
        assert!(
            e.contains("line 9") && e.contains("[[alert]] \"slow\" at line 5") && e.contains("not a duration"),
            "{e}"
        );
    }

    #[test]
    fn percentage_over_100_is_refused() {
        let e = err("[[alert]]\nmetric = \"memory\"\nabove = \"120%\"\n");
        assert!(
            e.contains("[[alert]] number 1 at line 1") && e.contains("at most 100%"),
            "{e}"
        );
        let e = err("[[alert]]\nmetric = \"cpu\"\nabove = 90\n");
        assert!(e.contains("with a % sign"), "{e}");
        let e = err("[[alert]]\nmetric = \"net_rx\"\nabove = \"fast\"\n");
        assert!(e.contains("bytes per second"), "{e}");
    }

    #[test]
    fn above_and_below_both_or_neither_are_refused() {
        let e = err("[[alert]]\nmetric = \"cpu\"\nabove = \"90%\"\nbelow = \"5%\"\n");
        assert!(e.contains("line 1") && e.contains("not both"), "{e}");
        let e = err("[[alert]]\nmetric = \"cpu\"\n");
        assert!(e.contains("line 1") && e.contains("needs a threshold"), "{e}");
    }

    #[test]
    fn vms_on_a_host_metric_is_refused() {
        let e = err("[[alert]]\nmetric = \"host_load\"\nabove = 4\nvms = [\"*\"]\n");
        assert!(
            e.contains("line 1") && e.contains("host metric") && e.contains("remove vms"),
            "{e}"
        );
        let e = err("[[alert]]\nmetric = \"cpu\"\nabove = \"4%\"\nvms = [\"a/b\"]\n");
        assert!(e.contains("\"a/b\""), "{e}");
    }

    #[test]
    fn a_notifier_that_is_not_configured_is_refused() {
        let e = err(&format!(
            "{MAIL}[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nnotify = [\"webhook\"]\n"
        ));
        assert!(
            e.contains("[[alert]] \"busy\" at line 5")
                && e.contains("\"webhook\" is not a configured notifier")
                && e.contains("mail"),
            "{e}"
        );
        let e = err("[alerts]\nnotify = [\"mail\"]\n");
        assert!(e.contains("[alerts]") && e.contains("none is configured"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused_naming_the_entry() {
        let e = err("[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nduration = \"5m\"\n");
        assert!(
            e.contains("line 5")
                && e.contains("unknown field `duration`")
                && e.contains("[[alert]] \"busy\" at line 1"),
            "{e}"
        );
        let e = err("[alerts]\nrepeat_every = \"1h\"\n");
        assert!(e.contains("line 2") && e.contains("repeat_every"), "{e}");
        let e = err(&format!("{MAIL}smtp_port = 25\n"));
        assert!(e.contains("smtp_port"), "{e}");
    }

    #[test]
    fn duplicate_and_reserved_names_are_refused() {
        let e = err("[[alert]]\nmetric = \"cpu\"\nabove = \"90%\"\n[[alert]]\nmetric = \"cpu\"\nabove = \"90%\"\nvms = [\"a\"]\n");
        assert!(
            e.contains("line 4") && e.contains("already used") && e.contains("line 1") && e.contains("own name"),
            "{e}"
        );
        let e = err("[[alert]]\nname = \"crash\"\nmetric = \"cpu\"\nabove = \"90%\"\n");
        assert!(e.contains("built-in"), "{e}");
    }

    #[test]
    fn thresholds_for_munin() {
        let text = format!(
            "{MAIL}[[alert]]\nname = \"w\"\nmetric = \"cpu\"\nabove = \"80%\"\n[[alert]]\nname = \"w2\"\nmetric = \"cpu\"\nabove = \"70%\"\nvms = [\"db?\"]\n[[alert]]\nname = \"c\"\nmetric = \"cpu\"\nabove = \"95%\"\nseverity = \"critical\"\n[[alert]]\nname = \"idle\"\nmetric = \"cpu\"\nbelow = \"1%\"\n[[alert]]\nname = \"load\"\nmetric = \"host_load\"\nabove = 8\nseverity = \"critical\"\n"
        );
        let c = HostConfig::parse(&text).unwrap();
        let rules = compile_all(&c.alert, &c.notify);
        assert_eq!(thresholds(&rules, "web1", &[], Metric::Cpu), (Some(80.0), Some(95.0)));
        assert_eq!(thresholds(&rules, "db1", &[], Metric::Cpu), (Some(70.0), Some(95.0)));
        assert_eq!(thresholds(&rules, "web1", &[], Metric::Memory), (None, None));
        assert_eq!(thresholds(&rules, "", &[], Metric::HostLoad), (None, Some(8.0)));
        assert_eq!(
            threshold_ranges(&rules, "web1", &[], Metric::Cpu),
            (Some("1:80".into()), Some("95".into()))
        );
    }

    #[test]
    fn globs() {
        assert!(glob(b"web*", b"web12") && glob(b"*", b"") && glob(b"w?b", b"web") && glob(b"*-db", b"a-db"));
        assert!(!glob(b"web?", b"web12") && !glob(b"web", b"web1") && !glob(b"*-db", b"adb"));
    }
}
