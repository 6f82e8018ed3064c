//! A destination next to an "outside" directory, and a check that a hostile archive is
//! rejected without touching anything outside the destination.

use std::path::PathBuf;

use cap_std::fs::Dir;
use ibu::archive::{ExtractError, ExtractOptions, Reason, extract};

use super::walk;

pub struct Scene {
    pub tmp: tempfile::TempDir,
}

impl Scene {
    /// `<tmp>/dest` (empty) next to `<tmp>/outside/secret`.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("dest")).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret"), b"untouched").unwrap();
        Scene { tmp }
    }

    pub fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }

    /// `<tmp>/outside` without its leading `/`, for names that go through a symlink to `/`.
    pub fn outside_rel(&self) -> String {
        let p = self.tmp.path().join("outside");
        p.to_str().unwrap().trim_start_matches('/').to_string()
    }

    pub fn outside_abs(&self) -> String {
        self.tmp
            .path()
            .join("outside")
            .to_str()
            .unwrap()
            .to_string()
    }

    pub fn everything_outside_dest(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        let mut v: Vec<_> = walk(self.tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with(self.dest()))
            .map(|p| {
                let content = std::fs::symlink_metadata(&p)
                    .unwrap()
                    .is_file()
                    .then(|| std::fs::read(&p).unwrap());
                (p, content)
            })
            .collect();
        v.sort();
        v
    }

    /// Extract `bytes`, expect a rejection of `entry`, and check that nothing outside `dest`
    /// changed. Returns the reason.
    pub fn rejected(&self, bytes: &[u8], opts: &ExtractOptions, entry: &str) -> Reason {
        let before = self.everything_outside_dest();
        let dest = Dir::open_ambient_dir(self.dest(), cap_std::ambient_authority()).unwrap();
        let err = extract(bytes, &dest, opts).expect_err("hostile archive must be rejected");
        let (got_entry, why) =
            ExtractError::find(&err).unwrap_or_else(|| panic!("not a rejection: {err:#}"));
        assert!(
            got_entry.contains(entry),
            "rejected entry {got_entry:?}, expected {entry:?}: {err:#}"
        );
        let msg = format!("{err:#}");
        assert!(msg.contains("rejected"), "{msg}");
        assert_eq!(
            before,
            self.everything_outside_dest(),
            "nothing changed outside dest"
        );
        assert_eq!(
            std::fs::read(self.tmp.path().join("outside/secret")).unwrap(),
            b"untouched"
        );
        why.clone()
    }

    pub fn dest_names(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = walk(&self.dest())
            .into_iter()
            .map(|p| p.strip_prefix(self.dest()).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    }
}

pub fn opts() -> ExtractOptions {
    ExtractOptions::default()
}
