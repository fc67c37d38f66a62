use super::*;

const FULL: &str = r#"
name = "web1"
cpus = 2
memory = "1G"
tags = ["lab", "prod"]
autostart = true
accel = "tcg"

[[disks]]
size = "8G"
role = "system"

[[disks]]
name = "data"
path = "/srv/data.qcow2"
role = "data"
bus = "scsi"

[boot]
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd"
cmdline = "console=ttyS0"

[network]
mode = "user"
mac = "52:54:00:aa:bb:cc"
[[network.forwards]]
host = 2222
guest = 22

[display]
mode = "none"
"#;

#[test]
fn parses_a_full_spec() {
    let s = VmSpec::from_toml(FULL).unwrap();
    assert_eq!(s.name.as_str(), "web1");
    assert_eq!(s.cpus, 2);
    assert_eq!(s.memory.0, 1 << 30);
    assert_eq!(s.accel, Accel::Tcg);
    assert_eq!(s.disks.len(), 2);
    assert_eq!(s.disks[1].bus, DiskBus::Scsi);
    assert_eq!(s.disks[1].role, DiskRole::Data);
    assert_eq!(s.boot_from(), BootFrom::Kernel);
    assert_eq!(s.network.mac.unwrap().to_string(), "52:54:00:aa:bb:cc");
    assert_eq!(s.network.forwards[0].host_addr, "127.0.0.1");
    assert_eq!(s.display.mode, DisplayMode::None);
    // Round trip through the stored form.
    assert_eq!(VmSpec::from_toml(&s.to_toml()).unwrap(), s);
}

#[test]
fn unknown_field_names_field_and_line() {
    let src = "name = \"a\"\n\n[boot]\nkernel = \"/k\"\nkernal_args = \"x\"\n";
    let e = VmSpec::from_toml(src).unwrap_err().to_string();
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("unknown field `kernal_args`"), "{e}");
    let e = VmSpec::from_toml("name = \"a\"\ncpu = 2\n").unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("`cpu`") && e.contains("cpus"), "{e}");
}

#[test]
fn bad_values_name_field_and_line() {
    let e = VmSpec::from_toml("name = \"../x\"\n").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("'/'"), "{e}");
    let e = VmSpec::from_toml("name = \"a\"\nmemory = \"lots\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("not a size"), "{e}");
    let e = VmSpec::from_toml("name = \"a\"\naccel = \"hvf\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("hvf"), "{e}");
}

#[test]
fn semantic_errors_are_located() {
    let src = "name = \"a\"\n[[disks]]\nsize = \"1G\"\n[[disks]]\nrole = \"data\"\n";
    let e = VmSpec::from_toml(src).unwrap_err();
    match &e {
        SpecError::Invalid { field, line, .. } => {
            assert_eq!(field, "disks[1]");
            assert_eq!(*line, Some(4));
        }
        other => panic!("{other:?}"),
    }
    let src = "name = \"a\"\ncpus = 0\n[[disks]]\nsize = \"1G\"\n";
    let e = VmSpec::from_toml(src).unwrap_err();
    assert!(
        matches!(e, SpecError::Invalid { ref field, line: Some(2), .. } if field == "cpus"),
        "{e:?}"
    );
    let src = "name = \"a\"\nmemory = \"8M\"\n[[disks]]\nsize = \"1G\"\n";
    assert!(VmSpec::from_toml(src).unwrap_err().to_string().contains("at least 16M"));
}

#[test]
fn boot_rules() {
    // No disks, no kernel: nothing to boot.
    let e = VmSpec::from_toml("name = \"a\"\n").unwrap_err().to_string();
    assert!(e.contains("boots from disk but has none"), "{e}");
    let e = VmSpec::from_toml("name = \"a\"\n[boot]\nfrom = \"cdrom-once\"\n[[disks]]\nsize=\"1G\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cdrom"), "{e}");
    let s = VmSpec::from_toml("name = \"a\"\ncdrom = \"/x.iso\"\n").unwrap();
    assert_eq!(s.boot_from(), BootFrom::Cdrom);
}

#[test]
fn mac_addresses() {
    assert!("52:54:00:01:02:03".parse::<MacAddr>().is_ok());
    assert!("01:00:5e:00:00:01"
        .parse::<MacAddr>()
        .unwrap_err()
        .contains("multicast"));
    assert!("52:54:00:01:02".parse::<MacAddr>().is_err());
    let m = MacAddr::generate();
    assert_eq!(&m.0[..3], &[0x52, 0x54, 0x00]);
    assert_eq!(m.0[0] & 0b10, 0b10, "locally administered bit");
}

#[test]
fn forwards_are_checked() {
    let src = "name=\"a\"\n[[disks]]\nsize=\"1G\"\n[network]\n[[network.forwards]]\nhost=80\nguest=80\n[[network.forwards]]\nhost=80\nguest=81\n";
    let e = VmSpec::from_toml(src).unwrap_err().to_string();
    assert!(e.contains("forwarded twice"), "{e}");
}
