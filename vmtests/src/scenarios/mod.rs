//! The scenarios, each a sequence: provision -> act -> assert on real facts.

use crate::harness::Scenario;

mod faults;
mod first_boot;
pub(crate) mod node;
mod prep;
mod rollback;
mod seed;
mod upgrade;

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "first-boot",
        about: "Ignition creates and mounts the shared partition; ibu runs at boot and is Idle; \
                ibu's units work on a real systemd",
        run: first_boot::run,
    },
    Scenario {
        name: "seed",
        about: "a seed VM on the new OS makes a seed with `ibu seed create` and pushes it to \
                the host's registry (htpasswd)",
        run: seed::run,
    },
    Scenario {
        name: "prep",
        about: "stage Prep by editing the desired file: ibu converges by itself to \
                PrepCompleted (new stateroot not default, images precached); then stage Idle \
                aborts and the node boots the old OS as before (makes the seed if needed)",
        run: prep::run,
    },
    Scenario {
        name: "prep-power-cut",
        about: "a hard power-off while Prep imports the new OS; at boot ibu resumes and \
                completes (makes the seed if needed)",
        run: prep::run_power_cut,
    },
    Scenario {
        name: "upgrade",
        about: "Prep, then stage Upgrade: ibu reboots into the new stateroot by itself and \
                completes (UpgradeCompleted); identity and workload data kept; Idle \
                finalizes (makes the seed if needed)",
        run: upgrade::run,
    },
    Scenario {
        name: "rollback",
        about: "on one target: Upgrade then a manual Rollback and Idle; an automatic rollback \
                after a failing post-pivot step; one by the init monitor (short timeout); \
                each finalized by Idle (makes the seed if needed)",
        run: rollback::run,
    },
    Scenario {
        name: "unbootable",
        about: "the new stateroot's initramfs is broken: the trial boot panics and the node \
                comes back to the old stateroot by itself (Uncontrolled rollback); Idle cleans up",
        run: faults::run_unbootable,
    },
    Scenario {
        name: "upgrade-power-cut",
        about: "hard power-offs during Upgrade (before the pivot, just after the boot entry \
                is set, during the post-pivot steps); each power-on converges to \
                UpgradeCompleted",
        run: faults::run_power_cut,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}
