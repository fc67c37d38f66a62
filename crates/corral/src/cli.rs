//! Command-line grammar (clap derive). Kept apart from what the commands do.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use corral_types::{Accel, ByteSize, DiskBus, DiskRole, DisplayMode, HumanDuration, NetworkMode};

#[derive(Parser, Debug)]
#[command(
    name = "corral",
    version,
    about = "Run this host's virtual machines: define, start, stop, save and resume QEMU VMs",
    long_about = "corral runs a host's QEMU virtual machines from one binary.\n\n\
Host settings come from /etc/corral/corral.toml, or the file named by $CORRAL_CONFIG. \
Without one, VMs live in /var/lib/corral (root) or ~/.local/share/corral.",
    after_help = "Examples:\n  corral vm create web1 --memory 1G --disk 8G --cdrom debian.iso --cdrom-once\n  corral vm start web1\n  corral vm list --json\n  corral vm stop web1 --timeout 90s"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables and sentences.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v: info, -vv: debug). CORRAL_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Use this config file instead of $CORRAL_CONFIG or /etc/corral/corral.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run the command on a `corral serve` elsewhere (`https://host:8006`), with the token in
    /// CORRAL_TOKEN or --token-file. Output is the same as running it there.
    #[arg(long, global = true, value_name = "URL", env = "CORRAL_REMOTE")]
    pub remote: Option<String>,
    /// With --remote: read the API token from this file (instead of CORRAL_TOKEN).
    #[arg(long, global = true, value_name = "FILE", env = "CORRAL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// With --remote over HTTPS: trust this PEM certificate (the server's self-signed one is
    /// <data_dir>/tls/cert.pem there).
    #[arg(long, global = true, value_name = "FILE", env = "CORRAL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Define, start, stop and inspect VMs.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Internal snapshots: take one, go back to it, list, delete.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// A VM's disks: add, grow, remove (live on a running VM); overlays, merges, chain info.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Base images that linked clones stand on.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Long operations (clones, merges, snapshots) and their progress.
    #[command(subcommand)]
    Job(JobCmd),
    /// Incremental, deduplicated backups into the store, and restores (first steps).
    #[command(subcommand)]
    Backup(BackupCmd),
    /// The backup store itself.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Scheduled backups, verifies, prunes and gc (`[[schedule]]` in the config; `corral serve` runs them).
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Alerts: the firing ones (--all: the history), or `alerts test` (`[[alert]]`, docs/alerts.md).
    Alerts(AlertsArgs),
    /// Host-wide actions for boot and shutdown.
    #[command(subcommand)]
    Host(HostCmd),
    /// Serve the REST API (`/api/v1`) over this host's VMs.
    Serve {
        /// Address and port (plain HTTP on loopback; HTTPS elsewhere).
        #[arg(long, default_value = "127.0.0.1:8006", value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// Allow plain HTTP on a non-loopback address: passwords and tokens cross the network in clear.
        #[arg(long, conflicts_with_all = ["tls", "tls_cert"])]
        insecure_http: bool,
        /// Serve HTTPS also on loopback (beyond loopback it is the default).
        #[arg(long)]
        tls: bool,
        /// The certificate chain (PEM); without it a self-signed one is made in <data_dir>/tls once.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
    /// Resource use of VMs and of the host: CPU, memory, disk and network, sampled over an
    /// interval (no daemon needed).
    Metrics {
        /// VMs to show (default: all).
        vms: Vec<String>,
        /// The time between the two samples rates are computed from.
        #[arg(long, default_value = "2s", value_name = "DURATION")]
        interval: HumanDuration,
        /// Keep sampling and printing every interval until interrupted (JSON: one object a line).
        #[arg(long)]
        watch: bool,
        /// What VMs are given (vCPUs, memory, disks) against what the host has.
        #[arg(long, conflicts_with_all = ["vms", "watch"])]
        summary: bool,
        /// One sample at once: the cumulative counters only, no rates (as `virsh domstats`
        /// gives them), for scripts that keep their own previous sample.
        #[arg(long, conflicts_with_all = ["watch", "summary", "interval"])]
        once: bool,
    },
    /// The munin plugin (`corral_all`: CPU, memory, disk and network of every VM, and what
    /// VMs are given against the host): link it into munin and configure it.
    #[command(subcommand)]
    Munin(MuninCmd),
    /// Users of the API and web page.
    #[command(subcommand)]
    User(UserCmd),
    /// API tokens (sent as `Authorization: Bearer TOKEN`).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The audit log of mutating API calls, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user (the password is asked for twice, or read from stdin).
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: corral_types::Role,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and their roles.
    #[command(alias = "ls")]
    List,
    /// Delete a user.
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; prints it once on stdout (only its hash is kept).
    Create {
        #[arg(long, value_parser = parse_role)]
        role: corral_types::Role,
        /// What the token is for (shown in lists and the audit log).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (never their secrets).
    #[command(alias = "ls")]
    List,
    /// Revoke a token by id.
    Revoke { id: i64 },
}

fn parse_role(s: &str) -> Result<corral_types::Role, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Back up VMs (live if running): incremental when the last backup's dirty bitmap is usable.
    Run {
        /// The VMs to back up.
        #[arg(required_unless_present_any = ["tag", "all"])]
        vms: Vec<String>,
        /// Every VM with this tag (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Every VM.
        #[arg(long)]
        all: bool,
        /// Leave this VM out (with --all or --tag; repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Read every disk in full (still stores only new chunks).
        #[arg(long)]
        full: bool,
        /// System disks only; data disks are recorded (size, bus, format) and come back empty.
        /// The default for VMs whose spec says `[backup] skeleton = true`.
        #[arg(long, conflicts_with = "all_disks")]
        skeleton: bool,
        /// Every disk, even for a VM whose spec makes skeleton backups its default.
        #[arg(long)]
        all_disks: bool,
    },
    /// List backups, oldest first.
    #[command(alias = "ls")]
    List {
        /// Only this VM's backups.
        vm: Option<String>,
    },
    /// Re-hash every chunk the backups refer to; names each corrupt or missing chunk with the
    /// backups, disks and offsets affected.
    Verify {
        /// Backup ids or VM names (a VM: all its backups).
        #[arg(required_unless_present = "all", value_name = "ID|VM")]
        ids: Vec<String>,
        /// Every backup in the store.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete a VM's backups that no keep-* rule keeps (their chunks go at the next `store gc`).
    Prune {
        /// The VM whose backups to prune.
        #[arg(required_unless_present = "all")]
        vm: Option<String>,
        /// Every VM that has backups.
        #[arg(long, conflicts_with = "vm")]
        all: bool,
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        #[arg(long, default_value_t = 0)]
        keep_monthly: u32,
        /// Show what would go without deleting.
        #[arg(long)]
        dry_run: bool,
    },
    /// One backup's manifest: kind, parent, disks, statistics.
    Show {
        /// The backup's id.
        id: String,
    },
    /// Restore into a temporary VM without network, boot it, wait for a sign of life, remove it.
    Drill {
        /// The backup's id.
        id: String,
        /// The sign of life: a line the serial console prints once the guest is up (default:
        /// the guest agent's ping, for VMs with a guest agent).
        #[arg(long, value_name = "TEXT")]
        expect_line: Option<String>,
        /// How long the guest gets.
        #[arg(long, value_name = "DURATION", default_value = "2m")]
        timeout: HumanDuration,
    },
    /// Restore a backup: as a new VM (--as), over the stopped VM's disks (--in-place), or
    /// under its own name when no VM has it.
    Restore {
        /// The backup's id (`corral backup list`).
        id: String,
        /// The new VM's name.
        #[arg(long = "as", value_name = "NAME", conflicts_with = "in_place")]
        as_name: Option<String>,
        /// Only this disk (repeatable). With --as the others come back empty.
        #[arg(long = "disk", value_name = "NAME")]
        disks: Vec<String>,
        /// Overwrite the disks of the backup's VM, which must be stopped.
        #[arg(long)]
        in_place: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Create the backup store at `[backup] store` now (the first backup does it otherwise);
    /// says where it is and how it is set up when it exists.
    Init,
    /// Free chunks no backup refers to, and what killed backups left behind.
    Gc,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// The schedules with their next run and last result.
    #[command(alias = "ls")]
    List,
    /// Run a schedule now, in the foreground (also a disabled one); fails if any target fails.
    Run {
        /// The schedule's name (`corral schedule list`).
        name: String,
    },
    /// Show when a calendar expression is due next, in this host's time zone.
    #[command(
        after_help = "Examples:\n  corral schedule check 'daily 02:00'\n  corral schedule check 'mon..fri 22:30' --count 10\n  corral schedule check '*:0/15'"
    )]
    Check {
        /// A calendar expression (docs/schedules.md), quoted.
        expr: String,
        /// How many times to list.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
    },
}

/// `corral alerts [--all]` or `corral alerts test`.
#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  corral alerts                 # what is firing now\n  corral alerts --all --json    # the history\n  corral alerts test --notify mail"
)]
pub struct AlertsArgs {
    /// The history too (resolved alerts), newest first.
    #[arg(long)]
    pub all: bool,
    /// How many alerts to show at most.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(subcommand)]
    pub cmd: Option<AlertsCmd>,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCmd {
    /// Send a test notification through every configured notifier (or one) and report how it
    /// went; fails if any did not get through.
    Test {
        /// Only this notifier.
        #[arg(long, value_name = "NOTIFIER", value_parser = ["mail", "webhook"])]
        notify: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// List base images with their owner VM and how many linked clones use each.
    #[command(alias = "ls")]
    List,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Recent jobs, newest first.
    #[command(alias = "ls")]
    List {
        /// Only this VM's jobs.
        #[arg(long)]
        vm: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One job by id.
    Show { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Take a snapshot; of a running VM it includes memory, so `revert` brings back the running guest.
    Create {
        /// The VM's name.
        vm: String,
        /// The snapshot's name (same rule as VM names).
        name: String,
        /// A note kept with the snapshot (shown by `snapshot list`).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Disks only, even for a running VM.
        #[arg(long)]
        no_memory: bool,
    },
    /// List a VM's snapshots with date, memory size and the guest clock.
    #[command(alias = "ls")]
    List {
        /// The VM's name.
        vm: String,
    },
    /// Go back to a snapshot (disks, and memory on a running VM).
    Revert {
        /// The VM's name.
        vm: String,
        /// The snapshot's name.
        name: String,
    },
    /// Delete a snapshot.
    #[command(alias = "rm")]
    Delete {
        /// The VM's name.
        vm: String,
        /// The snapshot's name.
        name: String,
    },
}

/// `corral disk …`. Each variant is one engine operation (see `disk.rs`).
#[derive(Subcommand, Debug)]
pub enum DiskCmd {
    /// Create a new qcow2 disk in the VM's directory and attach it (hot-plugged into a running VM).
    Add {
        /// The VM's name.
        vm: String,
        /// The disk's size, e.g. 10G.
        #[arg(long, value_name = "SIZE")]
        size: ByteSize,
        /// data (default) or system.
        #[arg(long)]
        role: Option<DiskRole>,
        /// The disk's name (default: the first free diskN); it is also the QEMU device id.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// virtio (default), scsi or sata (sata only on a stopped VM).
        #[arg(long)]
        bus: Option<DiskBus>,
    },
    /// Grow a disk (live on a running VM); shrinking is refused.
    Resize {
        /// The VM's name.
        vm: String,
        /// The disk's name (`corral vm show VM` lists them).
        disk: String,
        /// The new size, e.g. 20G.
        size: ByteSize,
    },
    /// Detach a disk (unplugged live from a running VM) and delete its image if corral made it.
    #[command(alias = "rm")]
    Remove {
        /// The VM's name.
        vm: String,
        /// The disk's name.
        disk: String,
        /// Keep the image file.
        #[arg(long)]
        keep_file: bool,
        /// How long a running guest gets to release the disk (default 30s).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<HumanDuration>,
    },
    /// Show each disk's backing chain: allocated size per layer, overlay ratio, policy verdict.
    Info {
        /// The VM's name.
        vm: String,
    },
    /// Put a new qcow2 overlay on a disk (all disks without DISK); the layer below becomes read-only.
    Overlay {
        /// The VM's name.
        vm: String,
        /// One disk by name (default: every disk, at the same instant).
        disk: Option<String>,
    },
    /// Merge a disk's top overlay back into the layer below (live with block-commit, or qemu-img commit).
    Commit {
        /// The VM's name.
        vm: String,
        /// One disk by name (default: every disk that has an overlay).
        disk: Option<String>,
    },
    /// Merge every overlay above disk.consolidate_above or disk.consolidate_ratio.
    Consolidate {
        /// The VM's name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        vm: Option<String>,
        /// Every VM.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Define a new VM from options (qcow2 disks are created for each --disk SIZE).
    Create(CreateArgs),
    /// Define a new VM from a TOML spec file (relative paths are relative to the file).
    Define {
        /// The spec: one TOML document (see docs/spec.md).
        file: PathBuf,
    },
    /// Edit a VM's spec in $VISUAL/$EDITOR; changes apply at the next cold start.
    Edit {
        /// The VM's name.
        name: String,
    },
    /// List all VMs with their state.
    #[command(alias = "ls")]
    List,
    /// Show a VM's spec and state.
    Show {
        /// The VM's name.
        name: String,
        /// Also print the QEMU command line corral would run.
        #[arg(long)]
        argv: bool,
    },
    /// Show a VM's state (stopped, running, paused, saved, crashed) with pid, uptime and VNC.
    Status {
        /// The VM's name.
        name: String,
    },
    /// Boot a stopped VM, or resume a saved one.
    Start {
        /// The VM's name.
        name: String,
    },
    /// Shut a VM down: ACPI power button first, then a hard stop after the timeout.
    Stop {
        /// The VM's name.
        name: String,
        /// How long the guest gets to power off (default: lifecycle.stop_timeout, 60s).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<HumanDuration>,
        /// Skip the power button: end QEMU now (the guest cannot flush its caches).
        #[arg(long)]
        force: bool,
    },
    /// End a VM's QEMU process at once (SIGKILL).
    Kill {
        /// The VM's name.
        name: String,
    },
    /// Pause a running VM's vCPUs.
    Pause {
        /// The VM's name.
        name: String,
    },
    /// Continue a paused VM (or resume a saved one).
    Resume {
        /// The VM's name.
        name: String,
    },
    /// Suspend a VM to disk; the next `start` resumes it where it was.
    Save {
        /// The VM's name.
        name: String,
    },
    /// Delete a stopped VM and the disks corral created for it.
    #[command(alias = "rm")]
    Delete {
        /// The VM's name.
        name: String,
        /// Keep the disk images on disk.
        #[arg(long)]
        keep_disks: bool,
    },
    /// Make a new VM from an existing one: a full copy, or a linked clone on a shared read-only base.
    #[command(
        after_help = "Examples:\n  corral vm clone web1 web2                      independent copy (qemu-img convert)\n  corral vm clone base desk1 --linked            overlay on base's frozen disk, made in milliseconds\n  corral vm clone base desk2 --linked --from-snapshot golden"
    )]
    Clone {
        /// The VM to copy.
        source: String,
        /// The new VM's name.
        name: String,
        /// A qcow2 overlay on a read-only base shared by all clones (no copying).
        #[arg(long, conflicts_with = "full")]
        linked: bool,
        /// An independent copy of every disk (the default).
        #[arg(long)]
        full: bool,
        /// Clone the disks as they were at this internal snapshot.
        #[arg(long, value_name = "SNAPSHOT")]
        from_snapshot: Option<String>,
    },
    /// Put an ISO into the VM's CD-ROM drive, or empty it (live on a running VM with a drive).
    Cdrom {
        /// The VM's name.
        name: String,
        /// The ISO to insert.
        #[arg(required_unless_present = "eject", conflicts_with = "eject")]
        iso: Option<PathBuf>,
        /// Empty the drive instead.
        #[arg(long)]
        eject: bool,
    },
    /// Follow a VM's serial console log (Ctrl-C to leave).
    Console {
        /// The VM's name.
        name: String,
        /// Print the log so far and exit.
        #[arg(long)]
        no_follow: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The new VM's name: 1-63 of A-Z a-z 0-9 . _ -, not starting with . or -.
    pub name: String,
    /// Number of vCPUs (default: defaults.cpus in the config, 1).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory, e.g. 512M or 2G (default: defaults.memory, 512M).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<ByteSize>,
    /// Add a new qcow2 disk of this size; repeat for more disks (the first is the system disk).
    #[arg(long = "disk", value_name = "SIZE")]
    pub disks: Vec<ByteSize>,
    /// Boot this kernel directly.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STRING", requires = "kernel")]
    pub cmdline: Option<String>,
    /// Attach an ISO as CD-ROM.
    #[arg(long, value_name = "ISO")]
    pub cdrom: Option<PathBuf>,
    /// Boot the CD-ROM on the first start only (for installing), then the disk.
    #[arg(long, requires = "cdrom")]
    pub cdrom_once: bool,
    /// Tag the VM (repeatable); tags select VMs for backups and bulk actions.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// auto (host default), kvm or tcg.
    #[arg(long)]
    pub accel: Option<Accel>,
    /// vnc or none.
    #[arg(long)]
    pub display: Option<DisplayMode>,
    /// user or none.
    #[arg(long)]
    pub network: Option<NetworkMode>,
    /// Start the VM with `corral host start-autostart` (at host boot).
    #[arg(long)]
    pub autostart: bool,
    /// Add a channel for the QEMU guest agent.
    #[arg(long)]
    pub guest_agent: bool,
    /// Add a virtio balloon device (its size shows in `corral metrics`).
    #[arg(long)]
    pub balloon: bool,
}

#[derive(Subcommand, Debug)]
pub enum MuninCmd {
    /// Link `corral_all` to this binary in munin's plugin dir and write its plugin-conf.d
    /// section (runs as root; the config in use unless it is the default). Idempotent.
    Install {
        #[arg(long, default_value = "/etc/munin/plugins", value_name = "DIR")]
        plugin_dir: PathBuf,
        #[arg(long, default_value = "/etc/munin/plugin-conf.d", value_name = "DIR")]
        conf_dir: PathBuf,
    },
    /// Remove the link and the plugin-conf.d file `install` made.
    Uninstall {
        #[arg(long, default_value = "/etc/munin/plugins", value_name = "DIR")]
        plugin_dir: PathBuf,
        #[arg(long, default_value = "/etc/munin/plugin-conf.d", value_name = "DIR")]
        conf_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Stop (or save) every running VM and wait until all have closed (host shutdown).
    StopAll {
        /// Save VMs to disk instead of shutting them down; they resume at the next start.
        #[arg(long)]
        save: bool,
        /// How long each guest gets to power off before it is ended.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<HumanDuration>,
    },
    /// Start every VM marked autostart (host boot).
    StartAutostart,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_cdrom_grammar() {
        let cli = Cli::try_parse_from([
            "corral", "disk", "add", "web1", "--size", "10G", "--bus", "scsi", "--role", "system", "--name", "db",
        ])
        .unwrap();
        match cli.command {
            Command::Disk(DiskCmd::Add {
                size, bus, role, name, ..
            }) => {
                assert_eq!(size, ByteSize(10 << 30));
                assert_eq!((bus, role), (Some(DiskBus::Scsi), Some(DiskRole::System)));
                assert_eq!(name.as_deref(), Some("db"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["corral", "disk", "add", "web1"]).is_err(),
            "--size is required"
        );
        assert!(Cli::try_parse_from(["corral", "disk", "resize", "web1", "d", "10Q"]).is_err());
        assert!(Cli::try_parse_from(["corral", "vm", "cdrom", "web1", "--eject"]).is_ok());
        assert!(
            Cli::try_parse_from(["corral", "vm", "cdrom", "web1"]).is_err(),
            "ISO or --eject"
        );
        assert!(Cli::try_parse_from(["corral", "vm", "cdrom", "web1", "a.iso", "--eject"]).is_err());
    }

    /// The systemd unit runs corral commands: they must stay valid as the CLI evolves.
    #[test]
    fn systemd_unit_commands_parse() {
        let unit = include_str!("../../../packaging/corral.service");
        let default_args = unit
            .lines()
            .find_map(|l| l.strip_prefix("Environment=CORRAL_STOP_ARGS="))
            .expect("default CORRAL_STOP_ARGS");
        let mut seen = 0;
        for line in unit.lines() {
            let Some(cmd) = line
                .strip_prefix("ExecStart=")
                .or_else(|| line.strip_prefix("ExecStop="))
            else {
                continue;
            };
            let cmd = cmd.replace("$CORRAL_STOP_ARGS", default_args);
            let words: Vec<&str> = cmd.split_whitespace().collect();
            assert!(words[0].ends_with("/corral"), "{cmd}");
            Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            seen += 1;
        }
        assert_eq!(seen, 2);
        for alt in ["--save --timeout 120s", "--timeout 2m"] {
            let mut w = vec!["corral", "host", "stop-all"];
            w.extend(alt.split_whitespace());
            Cli::try_parse_from(&w).unwrap();
        }
    }
}
