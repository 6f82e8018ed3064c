//! The scenarios, each a sequence: provision -> act -> assert on real facts.

use crate::harness::Scenario;

mod first_boot;

pub const ALL: &[Scenario] = &[Scenario {
    name: "first-boot",
    about: "Ignition creates and mounts the shared partition; ibu runs at boot and is Idle; \
            ibu's units work on a real systemd",
    run: first_boot::run,
}];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}
