//! What a seed never carries from the seed host's `/etc` and `/var`, and why.
//!
//! A seed is applied to many hosts. Anything that identifies the seed machine (names, machine
//! IDs, host keys, hardware), grants access to it or to a registry (keys, credentials), or is
//! runtime state (locks, leases, logs, caches) must not travel: on a target it would be wrong at
//! best, and a shared secret across a fleet at worst. The targets' own site data is carried
//! across the pivot by the upgrade itself (LCA §5), not by the seed.
//!
//! The lists are data ([`ETC_EXCLUSIONS`], [`VAR_EXCLUSIONS`]), each rule with its reason, so that
//! `ibu` can show which rule dropped which path, and so that this table is the whole story (a
//! unit test checks that every rule is in it).
//!
//! # Patterns
//!
//! A pattern is a path relative to the tree (`/etc` or `/var`), `/`-separated. In a component,
//! `*` matches any run of characters (also none, also a leading dot); a component that is
//! exactly `**` matches any number of components (also none). A rule that matches a directory
//! drops its whole subtree; `dir/*` drops what is in `dir` but keeps `dir` itself (so a target
//! still gets `/var/tmp` with its mode 1777).
//!
//! # `/etc` (compared with the commit's defaults in `usr/etc`; see [`super::etc_diff`])
//!
//! A dropped path is neither archived nor listed in `etc.deletions`: the target keeps whatever
//! it has there.
//!
//! | pattern | why it is dropped |
//! |---|---|
//! | `hostname` | the seed's host name; a target keeps its own (LCA drops it too) |
//! | `machine-id` | the installation's identity (journal, D-Bus, DHCP client ID); unique per host |
//! | `machine-info` | pretty host name, chassis, location (`hostnamectl`): describes the seed machine |
//! | `hostid` | the seed's host ID (used by ZFS and others to recognise their host) |
//! | `ssh/ssh_host_*` | the seed's SSH host private keys and certificates: every target would share one identity |
//! | `NetworkManager/system-connections/*` | the seed's connection profiles: its addresses, interface names, Wi-Fi and 802.1X secrets (LCA drops them too) |
//! | `resolv.conf` | written from the seed's network (NetworkManager, DHCP) or a link into `/run`; the target's resolver is site data |
//! | `udev/rules.d/70-persistent-net.rules` | MAC address to interface name of the seed's NICs |
//! | `openvswitch/conf.db` | Open vSwitch database: the seed's system-id, bridges and ports (LCA drops it too) |
//! | `openvswitch/.conf.db.~lock~` | lock file of that database (LCA drops it too) |
//! | `openvswitch/system-id.conf` | the seed's Open vSwitch system-id |
//! | `ibu` | ibu's desired state and its ConfigMap/Secret drop-ins (pull secrets): per-node intent |
//! | `containers/auth.json` | container registry credentials |
//! | `krb5.keytab` | the seed's Kerberos host keys |
//! | `pki/consumer/*` | subscription-manager identity certificate and key of the seed |
//! | `pki/entitlement/*` | subscription entitlement certificates and keys issued to the seed |
//! | `ssl/private/ssl-cert-snakeoil.key` | Debian's per-host self-signed TLS key, made at install |
//! | `ssl/certs/ssl-cert-snakeoil.pem` | its certificate, naming the seed's host name |
//! | `iscsi/initiatorname.iscsi` | the seed's iSCSI initiator name, unique per host |
//! | `lvm/devices/system.devices` | LVM's list of the seed's disks; on a target LVM would ignore its own |
//! | `lvm/archive/*` | metadata backups of the seed's volume groups |
//! | `lvm/backup/*` | metadata backups of the seed's volume groups |
//! | `multipath/wwids` | WWIDs of the seed's disks |
//! | `multipath/bindings` | multipath names bound to the seed's disks |
//! | `adjtime` | drift and mode of the seed's hardware clock |
//! | `.pwd.lock` | shadow-utils lock file: runtime state |
//! | `passwd-` | backup left by shadow-utils: stale entries |
//! | `group-` | backup left by shadow-utils: stale entries |
//! | `shadow-` | backup left by shadow-utils: stale password hashes |
//! | `gshadow-` | backup left by shadow-utils: stale password hashes |
//! | `subuid-` | backup left by shadow-utils: stale entries |
//! | `subgid-` | backup left by shadow-utils: stale entries |
//! | `.updated` | systemd's `ConditionNeedsUpdate=` stamp: without it a target's first boot runs the update services for its new `/usr` |
//!
//! Kept on purpose:
//!
//! - `passwd`, `group`, `shadow`, `gshadow`: the accounts are part of the golden configuration
//!   (system users created at install time, the admin account), and the four files only make
//!   sense together — dropping `shadow` while keeping `passwd` leaves accounts without a shadow
//!   entry. So the seed's password hashes travel, as they do with LCA (which archives the `/etc`
//!   diff as is). Consequences, to be documented for users: set on the seed only what every
//!   target should have (typically locked passwords and key-based access); anyone who can pull
//!   the seed image can read the hashes, so the seed's registry repository needs the access
//!   control of a secret.
//! - `ostree/remotes.d`: where the OS comes from is fleet configuration, not site data, and the
//!   seed's `.origin` names a remote (`refspec=<remote>:<ref>`): without the remote's definition
//!   the target's new deployment could not be upgraded or even report its origin. The remotes
//!   hold URLs and GPG settings; a remote that needs a client certificate refers to files that
//!   are themselves part of the seed.
//! - `fstab`, `crypttab`: like LCA. A fleet whose hosts name filesystems by label (as RHCOS does)
//!   needs them; one whose entries name the seed's disks by UUID cannot use them, and
//!   collection warns when it sees such entries (see [`super::etc_diff`]).
//!
//! # `/var` (the seed's stateroot `var`; see [`super::var`])
//!
//! | pattern | why it is dropped |
//! |---|---|
//! | `tmp/*` | temporary files (LCA drops them too) |
//! | `log/*` | the seed's logs; the journal directory is even named by the seed's machine ID (LCA drops them too) |
//! | `cache/*` | caches are regenerable by definition (FHS); they only add size and stale, host-derived data |
//! | `lib/containers/*` | the shared container storage: a filesystem of its own, images travel through `containers.list` (LCA drops it too) |
//! | `lib/ibu` | ibu's own state and workspace (where the seed is assembled); a target has its own |
//! | `lib/systemd/random-seed` | the seed's entropy pool: targets must not start with the same randomness |
//! | `lib/systemd/credential.secret` | the host key of systemd's encrypted credentials |
//! | `lib/systemd/coredump/*` | crash dumps: large, and may hold secrets from process memory |
//! | `lib/dbus/machine-id` | D-Bus's copy of the machine ID (when it is not a link to `/etc/machine-id`) |
//! | `lib/NetworkManager/*` | DHCP leases, the `secret_key` behind stable IPv6 addresses and generated MACs, timestamps, seen BSSIDs: the seed's network state |
//! | `lib/dhclient/*` | DHCP leases of the seed |
//! | `lib/dhcp/*` | DHCP leases of the seed |
//! | `lib/chrony/*` | drift of the seed's clock and NTS keys and cookies |
//! | `lib/cni/*` | CNI IP allocations and cached results of the seed's pods; plugins are reinstalled (LCA drops `bin`) |
//! | `lib/kubelet/pods/*` | pod volumes, including mounted secrets and service-account tokens (LCA drops them too) |
//! | `roothome/.ssh` | root's SSH access: `authorized_keys` would grant the seed's admins access to every target, `id_*` are private keys, `known_hosts` is site data |
//! | `home/*/.ssh` | the same for every user |
//! | `**/ssh_host_*` | SSH host keys, wherever they are kept under `/var` |
//! | `**/.*_history` | shell and REPL histories (`.bash_history`, `.python_history`, ...; LCA drops `.bash_history`) |
//! | `**/.docker/config.json` | registry credentials (`/root/.docker/config.json` lives in `/var/roothome`) |
//! | `**/.config/containers/auth.json` | registry credentials of podman and skopeo |
//! | `.updated` | systemd's `ConditionNeedsUpdate=` stamp (see `/etc/.updated`) |
//!
//! Besides these rules, collection never enters another filesystem mounted below `/var` (it
//! warns about any other than container storage), skips sockets, FIFOs and device nodes, and
//! drops the work directory when it lies inside `/var`.

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// One rule: a pattern (see the module docs) and why it exists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exclusion {
    pub pattern: Cow<'static, str>,
    pub reason: Cow<'static, str>,
}

const fn rule(pattern: &'static str, reason: &'static str) -> Exclusion {
    Exclusion {
        pattern: Cow::Borrowed(pattern),
        reason: Cow::Borrowed(reason),
    }
}

const SHADOW_BACKUP: &str = "backup left by shadow-utils: stale entries and password hashes";
const LVM_BACKUP: &str = "metadata backups of the seed's volume groups";
const NEEDS_UPDATE: &str = "systemd's ConditionNeedsUpdate= stamp: without it a target's first \
                            boot runs the update services for its new /usr";

/// Paths under `/etc` a seed never carries (relative to `/etc`).
pub const ETC_EXCLUSIONS: &[Exclusion] = &[
    rule("hostname", "the seed's host name; a target keeps its own"),
    rule(
        "machine-id",
        "the installation's identity (journal, D-Bus, DHCP client ID); unique per host",
    ),
    rule(
        "machine-info",
        "pretty host name, chassis and location of the seed machine",
    ),
    rule("hostid", "the seed's host ID"),
    rule(
        "ssh/ssh_host_*",
        "the seed's SSH host keys: every target would share one identity",
    ),
    rule(
        "NetworkManager/system-connections/*",
        "the seed's connection profiles: addresses, interface names, Wi-Fi and 802.1X secrets",
    ),
    rule(
        "resolv.conf",
        "written from the seed's network; the target's resolver is site data",
    ),
    rule(
        "udev/rules.d/70-persistent-net.rules",
        "MAC address to interface name of the seed's NICs",
    ),
    rule(
        "openvswitch/conf.db",
        "Open vSwitch database: the seed's system-id, bridges and ports",
    ),
    rule(
        "openvswitch/.conf.db.~lock~",
        "lock file of the Open vSwitch database",
    ),
    rule(
        "openvswitch/system-id.conf",
        "the seed's Open vSwitch system-id",
    ),
    rule(
        "ibu",
        "ibu's desired state and its ConfigMap/Secret drop-ins (pull secrets): per-node intent",
    ),
    rule("containers/auth.json", "container registry credentials"),
    rule("krb5.keytab", "the seed's Kerberos host keys"),
    rule(
        "pki/consumer/*",
        "subscription-manager identity certificate and key of the seed",
    ),
    rule(
        "pki/entitlement/*",
        "subscription entitlement certificates and keys issued to the seed",
    ),
    rule(
        "ssl/private/ssl-cert-snakeoil.key",
        "Debian's per-host self-signed TLS key, made at install",
    ),
    rule(
        "ssl/certs/ssl-cert-snakeoil.pem",
        "Debian's per-host self-signed TLS certificate, naming the seed",
    ),
    rule(
        "iscsi/initiatorname.iscsi",
        "the seed's iSCSI initiator name, unique per host",
    ),
    rule(
        "lvm/devices/system.devices",
        "LVM's list of the seed's disks; on a target LVM would ignore its own",
    ),
    rule("lvm/archive/*", LVM_BACKUP),
    rule("lvm/backup/*", LVM_BACKUP),
    rule("multipath/wwids", "WWIDs of the seed's disks"),
    rule(
        "multipath/bindings",
        "multipath names bound to the seed's disks",
    ),
    rule("adjtime", "drift and mode of the seed's hardware clock"),
    rule(".pwd.lock", "shadow-utils lock file: runtime state"),
    rule("passwd-", SHADOW_BACKUP),
    rule("group-", SHADOW_BACKUP),
    rule("shadow-", SHADOW_BACKUP),
    rule("gshadow-", SHADOW_BACKUP),
    rule("subuid-", SHADOW_BACKUP),
    rule("subgid-", SHADOW_BACKUP),
    rule(".updated", NEEDS_UPDATE),
];

/// Paths under `/var` a seed never carries (relative to `/var`).
pub const VAR_EXCLUSIONS: &[Exclusion] = &[
    rule("tmp/*", "temporary files"),
    rule(
        "log/*",
        "the seed's logs; the journal directory is named by the seed's machine ID",
    ),
    rule(
        "cache/*",
        "caches are regenerable by definition; they only add size and stale data",
    ),
    rule(
        "lib/containers/*",
        "the shared container storage; images travel through containers.list",
    ),
    rule(
        "lib/ibu",
        "ibu's own state and workspace; a target has its own",
    ),
    rule(
        "lib/systemd/random-seed",
        "the seed's entropy pool: targets must not start with the same randomness",
    ),
    rule(
        "lib/systemd/credential.secret",
        "the host key of systemd's encrypted credentials",
    ),
    rule(
        "lib/systemd/coredump/*",
        "crash dumps: large, and may hold secrets from process memory",
    ),
    rule("lib/dbus/machine-id", "D-Bus's copy of the machine ID"),
    rule(
        "lib/NetworkManager/*",
        "DHCP leases, the secret_key behind stable IPv6 addresses, timestamps: the seed's network state",
    ),
    rule("lib/dhclient/*", "DHCP leases of the seed"),
    rule("lib/dhcp/*", "DHCP leases of the seed"),
    rule(
        "lib/chrony/*",
        "drift of the seed's clock and NTS keys and cookies",
    ),
    rule(
        "lib/cni/*",
        "CNI IP allocations and cached results of the seed's pods",
    ),
    rule(
        "lib/kubelet/pods/*",
        "pod volumes, including mounted secrets and service-account tokens",
    ),
    rule(
        "roothome/.ssh",
        "root's SSH access: authorized_keys would open every target to the seed's admins; private keys",
    ),
    rule(
        "home/*/.ssh",
        "users' SSH access: authorized_keys would open every target to the seed's admins; private keys",
    ),
    rule("**/ssh_host_*", "SSH host keys"),
    rule("**/.*_history", "shell and REPL histories"),
    rule("**/.docker/config.json", "registry credentials"),
    rule(
        "**/.config/containers/auth.json",
        "registry credentials of podman and skopeo",
    ),
    rule(".updated", NEEDS_UPDATE),
];

/// A compiled list of rules.
#[derive(Debug, Clone)]
pub struct Exclusions {
    rules: Vec<(Exclusion, Vec<Vec<u8>>)>,
}

impl Exclusions {
    pub fn new(rules: &[Exclusion]) -> Exclusions {
        let mut me = Exclusions { rules: Vec::new() };
        for r in rules {
            me.push(r.clone());
        }
        me
    }

    /// Add a rule (e.g. the work directory).
    pub fn push(&mut self, rule: Exclusion) {
        let parts = rule
            .pattern
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect();
        self.rules.push((rule, parts));
    }

    pub fn rules(&self) -> impl Iterator<Item = &Exclusion> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// The first rule matching `rel` itself (a relative path; ancestors are not considered: a
    /// walk that stops at a matched directory never asks about what is inside it).
    pub fn matching(&self, rel: &Path) -> Option<&Exclusion> {
        let comps: Vec<&[u8]> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes()),
                _ => None,
            })
            .collect();
        self.rules
            .iter()
            .find(|(_, parts)| match_components(parts, &comps))
            .map(|(r, _)| r)
    }

    /// The first rule matching `rel` or any of its ancestors.
    pub fn matching_or_within(&self, rel: &Path) -> Option<&Exclusion> {
        rel.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .find_map(|a| self.matching(a))
    }
}

fn match_components(pattern: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p.as_slice() == b"**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((c, path_rest)) => match_component(p, c) && match_components(rest, path_rest),
            None => false,
        },
    }
}

/// `*` matches any run of bytes (also none); everything else matches itself.
fn match_component(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| match_component(rest, &name[skip..])),
        Some((c, rest)) => name.first() == Some(c) && match_component(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&'static str]) -> Exclusions {
        let rules: Vec<Exclusion> = patterns.iter().map(|p| rule(p, "test")).collect();
        Exclusions::new(&rules)
    }

    #[test]
    fn pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("hostname", "hostname", true),
            ("hostname", "hostname.bak", false),
            ("hostname", "x/hostname", false),
            ("ssh/ssh_host_*", "ssh/ssh_host_ed25519_key", true),
            ("ssh/ssh_host_*", "ssh/ssh_host_", true),
            ("ssh/ssh_host_*", "ssh/sshd_config", false),
            ("ssh/ssh_host_*", "ssh", false),
            ("tmp/*", "tmp", false),
            ("tmp/*", "tmp/x", true),
            ("tmp/*", "tmp/.hidden", true),
            ("tmp/*", "tmp/x/y", false),
            ("home/*/.ssh", "home/alice/.ssh", true),
            ("home/*/.ssh", "home/.ssh", false),
            ("**/.*_history", ".bash_history", true),
            ("**/.*_history", "roothome/.bash_history", true),
            ("**/.*_history", "home/a/b/.python_history", true),
            ("**/.*_history", "home/a/history", false),
            ("**/.*_history", "home/a/._history", true),
            ("**/ssh_host_*", "lib/x/ssh_host_rsa_key", true),
            (
                "**/.docker/config.json",
                "roothome/.docker/config.json",
                true,
            ),
            ("**/.docker/config.json", "roothome/.docker", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "x/a/b", false),
            ("*a*b*", "xaybz", true),
            ("*a*b*", "xbya", false),
        ];
        for (pattern, path, want) in cases {
            let e = set(&[pattern]);
            assert_eq!(
                e.matching(Path::new(path)).is_some(),
                *want,
                "{pattern} vs {path}"
            );
        }
    }

    #[test]
    fn within_checks_ancestors() {
        let e = set(&["ibu", "tmp/*"]);
        assert!(e.matching(Path::new("ibu/upgrade.yaml")).is_none());
        assert_eq!(
            e.matching_or_within(Path::new("ibu/configmaps/x/y"))
                .map(|r| r.pattern.as_ref()),
            Some("ibu")
        );
        assert!(e.matching_or_within(Path::new("tmp")).is_none());
        assert!(e.matching_or_within(Path::new("tmp/a/b")).is_some());
    }

    #[test]
    fn required_rules_are_present() {
        let etc = Exclusions::new(ETC_EXCLUSIONS);
        for p in [
            "hostname",
            "machine-id",
            "ssh/ssh_host_rsa_key",
            "ssh/ssh_host_rsa_key.pub",
            "NetworkManager/system-connections/eth0.nmconnection",
            "ibu",
            "containers/auth.json",
            "adjtime",
            ".pwd.lock",
            "shadow-",
            "gshadow-",
            "passwd-",
            "group-",
        ] {
            assert!(etc.matching(Path::new(p)).is_some(), "/etc/{p}");
        }
        for p in [
            "shadow",
            "passwd",
            "ostree/remotes.d",
            "fstab",
            "ssh/sshd_config",
        ] {
            assert!(etc.matching_or_within(Path::new(p)).is_none(), "/etc/{p}");
        }
        let var = Exclusions::new(VAR_EXCLUSIONS);
        for p in [
            "tmp/x",
            "log/journal",
            "cache/apt",
            "lib/containers/storage",
            "lib/ibu",
            "lib/systemd/random-seed",
            "lib/dbus/machine-id",
            "lib/NetworkManager/secret_key",
            "roothome/.bash_history",
            "roothome/.ssh",
            "roothome/.docker/config.json",
            "lib/cni/networks",
        ] {
            assert!(var.matching(Path::new(p)).is_some(), "/var/{p}");
        }
        for p in [
            "tmp",
            "log",
            "lib/containers",
            "lib",
            "roothome",
            "lib/systemd",
        ] {
            assert!(var.matching(Path::new(p)).is_none(), "/var/{p}");
        }
    }

    /// The module documentation is the user-facing list: every rule must be in its tables.
    #[test]
    fn every_rule_is_documented() {
        let source = include_str!("exclude.rs");
        for r in ETC_EXCLUSIONS.iter().chain(VAR_EXCLUSIONS) {
            let row = format!("//! | `{}` |", r.pattern);
            assert!(
                source.contains(&row),
                "{} is not in the docs table",
                r.pattern
            );
            assert!(!r.reason.is_empty());
        }
    }
}
