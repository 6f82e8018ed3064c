//! ibu's Ignition configs: generated files up to date, every config (and the MachineConfigs'
//! embedded ones, and what a test VM boots with) accepted by `ignition-validate`.

use std::path::Path;

use ibu_vmtests::ignition::{self, RunConfig};
use ibu_vmtests::repo_root;

fn validate_json(dir: &Path, name: &str, config: &serde_json::Value) {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    ignition::validate_file(&path).unwrap();
}

#[test]
fn generated_files_are_up_to_date() {
    ignition::write_or_check(&repo_root(), false).unwrap();
}

#[test]
fn shipped_configs_are_valid() {
    let repo = repo_root();
    for s in ignition::SOURCES {
        ignition::validate_file(&repo.join("ignition").join(s.ignition)).unwrap();
    }
}

#[test]
fn machineconfigs_wrap_the_same_valid_configs() {
    let repo = repo_root();
    let tmp = tempfile::tempdir().unwrap();
    for s in ignition::SOURCES {
        let mc_path = repo.join(format!("ignition/machineconfig/{}.yaml", s.machineconfig));
        let mc: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&mc_path).unwrap()).unwrap();
        assert_eq!(mc["kind"], "MachineConfig");
        assert_eq!(mc["metadata"]["name"], s.machineconfig);
        let mut config = mc["spec"]["config"].clone();
        assert_eq!(
            config["ignition"]["version"],
            ignition::MACHINECONFIG_IGNITION_VERSION
        );
        validate_json(tmp.path(), &format!("{}.ign", s.machineconfig), &config);
        // Apart from the spec version, the same config as the .ign.
        let ign: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo.join("ignition").join(s.ignition)).unwrap(),
        )
        .unwrap();
        config["ignition"]["version"] = ign["ignition"]["version"].clone();
        assert_eq!(config, ign, "{}", mc_path.display());
    }
}

#[test]
fn the_config_a_test_vm_boots_with_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ignition::vm_config(
        &repo_root(),
        &RunConfig {
            ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIbuVmTestsKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKey test",
            ibu_url: "http://10.0.2.2:8080/ibu",
            ibu_sha512: &"ab".repeat(64),
            extra: vec![ignition::files_config(&[("/etc/ibu/upgrade.yaml", 0o644, "spec: {}\n")])],
        },
    )
    .unwrap();
    assert_eq!(
        config["ignition"]["config"]["merge"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    validate_json(tmp.path(), "vm.ign", &config);
}
