//! Executors of Prep's steps: thin wrappers that read the seed and change the sysroot.
//!
//! Everything a step downloads lives in ibu's workspace (`/var/lib/ibu/workspace/seed`) until
//! it is consumed: the metadata layer and extraction scratch (ostree objects go straight into
//! the sysroot repository). The pull secret is written as an authfile (mode 0600) only for as
//! long as a step needs it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::Env;
use crate::plan::{Outcome, StepData};
use crate::registry::ClientOptions;
use crate::seed::fetch::{self, SeedMeta};
use crate::seed::inspect::open_source;
use crate::seed::source::SeedSource;
use crate::stateroot;
use crate::status::store::{DeploymentRecord, SeedRecord};

/// ibu's workspace for the seed of this Prep.
pub fn seed_workspace(env: &Env<'_>) -> PathBuf {
    env.paths.workspace().join("seed")
}

/// The pull secret as an authfile for the duration of a step; removed when dropped.
pub struct Authfile {
    path: Option<PathBuf>,
}

impl Authfile {
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl Drop for Authfile {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Write the desired pull secret (if any) as a 0600 authfile in the workspace.
pub fn authfile(env: &Env<'_>) -> Result<Authfile> {
    let Some(r) = env
        .desired
        .seed
        .as_ref()
        .and_then(|s| s.pull_secret.as_ref())
    else {
        return Ok(Authfile { path: None });
    };
    let secret = crate::spec::refs::pull_secret(&env.paths.config_dir(), r)?;
    let dir = env.paths.workspace();
    crate::fsutil::create_dir_all(&dir, 0o700)?;
    let p = dir.join("auth.json");
    crate::fsutil::write_atomic(&p, secret.dockerconfigjson.expose(), 0o600)
        .context("writing the pull secret's authfile")?;
    Ok(Authfile { path: Some(p) })
}

/// How to reach the registry from this host: its `/etc/containers` (of the booted deployment).
pub fn client_options(env: &Env<'_>, auth: &Authfile) -> ClientOptions {
    let containers = env.paths.etc.join("containers");
    ClientOptions {
        authfile: auth.path().map(Path::to_path_buf),
        certs_d: containers.join("certs.d"),
        registries_conf: containers.join("registries.conf"),
        registries_conf_d: Some(containers.join("registries.conf.d")),
        ..ClientOptions::default()
    }
}

fn open_seed(env: &Env<'_>, image: &str, auth: &Authfile) -> Result<Box<dyn SeedSource>> {
    let scratch = seed_workspace(env).join("scratch");
    crate::fsutil::create_dir_all(&scratch, 0o700)?;
    open_source(image, &client_options(env, auth), &scratch)
        .with_context(|| format!("opening seed {image}"))
}

pub(super) fn inspect_seed(env: &Env<'_>, image: &str) -> Result<Outcome> {
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let (manifest, digest) = src.manifest()?;
    let config = src.config(&manifest)?;
    let info = crate::seed::compat::seed_info(&config.config.labels).map_err(anyhow::Error::msg)?;
    Ok(Outcome::Produced {
        message: format!(
            "seed {image} is {digest}: version {}, {} ({} read, nothing pulled)",
            info.version,
            info.architecture,
            crate::humanize::bytes(src.bytes_downloaded())
        ),
        data: StepData::Seed(Box::new(SeedRecord {
            manifest_digest: digest,
            info,
        })),
    })
}

/// The seed's metadata, from the workspace if a previous step read it, else from the seed.
fn meta(env: &Env<'_>, src: &dyn SeedSource) -> Result<SeedMeta> {
    let ws = seed_workspace(env);
    if let Ok(m) = fetch::parse_meta(&ws.join("meta")) {
        return Ok(m);
    }
    let (manifest, _) = src.manifest()?;
    fetch::read_meta(src, &manifest, &ws)
}

fn recorded_seed<'a>(env: &'a Env<'_>) -> Result<&'a SeedRecord> {
    env.target
        .and_then(|t| t.seed.as_ref())
        .context("internal: the seed was not inspected")
}

pub(super) fn fetch_seed_meta(env: &Env<'_>, image: &str) -> Result<Outcome> {
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let (manifest, _) = src.manifest()?;
    let m = fetch::read_meta(src.as_ref(), &manifest, &seed_workspace(env))?;
    let label = &recorded_seed(env)?.info;
    if &m.info != label {
        bail!(
            "the seed's metadata layer does not match its seed_cluster_info label: the image is inconsistent"
        );
    }
    Ok(Outcome::Succeeded {
        message: format!(
            "seed metadata read: {} ostree objects in {} packs, {} images, {} /etc deletions",
            m.index.packs.iter().map(|p| p.objects.len()).sum::<usize>(),
            m.index.packs.len(),
            m.containers.len(),
            m.deletions.len()
        ),
    })
}

pub(super) fn import_ostree(
    env: &Env<'_>,
    image: &str,
    commit: &str,
    stateroot_name: &str,
) -> Result<Outcome> {
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let m = meta(env, src.as_ref())?;
    if m.index.commit != commit {
        bail!(
            "the seed's index is for commit {}, not {commit}",
            m.index.commit
        );
    }
    let (manifest, _) = src.manifest()?;
    let w = crate::sysroot::open_writable(env.paths)?;
    let repo = w.sysroot.repo();
    let stats = fetch::fetch_objects(
        src.as_ref(),
        &manifest,
        &m.index,
        &repo,
        &mut |done, total| {
            (env.progress)(&format!(
                "Importing the seed's OS: fetched {done} of {total} missing ostree objects"
            ));
        },
    )?;
    fetch::verify_complete(&repo, commit)?;
    let r = format!("{}/{stateroot_name}", stateroot::REF_PREFIX);
    repo.set_ref_immediate(None, &r, Some(commit), ostree::gio::Cancellable::NONE)
        .with_context(|| format!("setting ref {r} to {commit}"))?;
    drop(w);
    Ok(Outcome::Succeeded {
        message: format!(
            "imported commit {commit}: fetched {} of {} objects ({} of {}), {} already present",
            stats.fetched,
            stats.objects,
            crate::humanize::bytes(stats.fetched_bytes),
            crate::humanize::bytes(stats.total_bytes),
            stats.present
        ),
    })
}

pub(super) fn deploy_stateroot(
    env: &Env<'_>,
    image: &str,
    stateroot_name: &str,
    commit: &str,
    kargs: &[String],
) -> Result<Outcome> {
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let m = meta(env, src.as_ref())?;
    let d = stateroot::deploy_new(env.paths, stateroot_name, commit, &m.origin, kargs)?;
    Ok(Outcome::Produced {
        message: format!(
            "deployed {}.{} in stateroot {stateroot_name}, not as default",
            d.checksum, d.serial
        ),
        data: StepData::Deployment(d),
    })
}

pub(super) fn restore_var(env: &Env<'_>, image: &str, stateroot_name: &str) -> Result<Outcome> {
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let (manifest, _) = src.manifest()?;
    crate::sysroot::ensure_writable(env.paths)?;
    let dir = stateroot::stateroot_dir(env.paths, stateroot_name);
    let report = crate::seed::restore::restore_var(src.as_ref(), &manifest, &dir)?;
    Ok(Outcome::Succeeded {
        message: format!("/var of {stateroot_name}: {}", report.summary()),
    })
}

pub(super) fn restore_etc(
    env: &Env<'_>,
    image: &str,
    stateroot_name: &str,
    deployment: &DeploymentRecord,
) -> Result<Outcome> {
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let m = meta(env, src.as_ref())?;
    let (manifest, _) = src.manifest()?;
    crate::sysroot::ensure_writable(env.paths)?;
    let dir = stateroot::deployment_dir(env.paths, stateroot_name, deployment);
    let staging_parent = stateroot::stateroot_dir(env.paths, stateroot_name);
    let report = crate::seed::restore::restore_etc(
        src.as_ref(),
        &manifest,
        &dir,
        &staging_parent,
        &m.deletions,
    )?;
    Ok(Outcome::Succeeded {
        message: format!("/etc of the new deployment: {}", report.summary()),
    })
}

pub(super) fn precache(env: &Env<'_>, image: &str) -> Result<Outcome> {
    // RestoreEtc is recorded as done: its resume stamp has served its purpose.
    if let Some(t) = env.target {
        crate::seed::restore::discard_etc_attempt(&stateroot::stateroot_dir(
            env.paths,
            &t.stateroot,
        ))?;
    }
    let auth = authfile(env)?;
    let src = open_seed(env, image, &auth)?;
    let m = meta(env, src.as_ref())?;
    let mut wanted = m.containers.clone();
    if let Some(r) = &env.desired.additional_images {
        for i in crate::spec::refs::additional_images(&env.paths.config_dir(), r)? {
            wanted.push(i.pull_spec());
        }
    }
    let opts = crate::precache::PrecacheOptions {
        pull: crate::images::podman::PullOptions {
            authfile: auth.path().map(Path::to_path_buf),
            ..Default::default()
        },
        ..crate::precache::PrecacheOptions::default()
    };
    let report = crate::precache::precache(env.paths, &wanted, &opts, &mut |r| {
        (env.progress)(&r.summary());
    })?;
    if report.failed > 0 {
        let first: Vec<String> = report
            .failures
            .iter()
            .take(3)
            .map(|f| format!("{}: {}", f.image, f.error))
            .collect();
        return Ok(Outcome::Failed {
            message: format!(
                "precache failed: {}; {}",
                report.summary(),
                first.join("; ")
            ),
        });
    }
    Ok(Outcome::Succeeded {
        message: report.summary(),
    })
}
