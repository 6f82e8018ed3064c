//! Normalisation of either API generation into [`Desired`], with the semantic rules: the seed
//! reference (warnings while Idle, errors otherwise), object names, the auto-rollback timeout,
//! the annotations, duplicate references.

use std::collections::{BTreeMap, BTreeSet};

use crate::spec::image_ref::ImageRef;
use crate::spec::names::{check_namespace, check_object_name};
use crate::spec::suggest::closest;
use crate::spec::wire::{self, annotations as ann};
use crate::spec::yaml::{Problem, YamlPath};
use crate::spec::{
    ApiVersion, AutoRollback, DEFAULT_DISK_USAGE_THRESHOLD_PERCENT,
    DEFAULT_INIT_MONITOR_TIMEOUT_SECONDS, DEFAULT_NAMESPACE, Desired, ImageCleanup, ObjectRef,
    SeedRef, Stage,
};

/// The fields of either generation, in one shape.
pub(super) struct Common {
    api: ApiVersion,
    name: String,
    namespace: Option<String>,
    annotations: BTreeMap<String, String>,
    stage: Stage,
    seed: Option<WireSeed>,
    additional_images: Option<wire::AdditionalImagesRef>,
    timeout: Option<i64>,
    disabled_post_reboot_config: bool,
    disabled_upgrade_completion: bool,
    disabled_init_monitor: bool,
    extra_manifests: Vec<wire::ConfigMapRef>,
    oadp_content: Vec<wire::ConfigMapRef>,
}

struct WireSeed {
    image: Option<String>,
    version: Option<String>,
    /// The secret name and the path it was written at.
    pull_secret: Option<(String, YamlPath)>,
}

impl Common {
    pub(super) fn from_v1alpha1(d: wire::ImageBasedUpgradeV1Alpha1) -> Common {
        let s = d.spec;
        let ar = s.auto_rollback_on_failure.unwrap_or_default();
        let flag = |f: Option<wire::StringBool>| f.is_some_and(|b| b.0);
        let seed = s.seed_image_ref.map(|r| {
            let base = YamlPath::dotted("spec.seedImageRef.pullSecretRef");
            WireSeed {
                image: r.image,
                version: r.version,
                pull_secret: match r.pull_secret_ref {
                    // `pullSecretRef: ""`: nothing, like `additionalImages.name: ""`.
                    Some(wire::PullSecretRefV1Alpha1::Name(n)) if n.is_empty() => None,
                    Some(wire::PullSecretRefV1Alpha1::Name(n)) => Some((n, base)),
                    Some(wire::PullSecretRefV1Alpha1::Ref(r)) => Some((r.name, base.key("name"))),
                    None => None,
                },
            }
        });
        Common {
            api: ApiVersion::V1Alpha1,
            name: d.metadata.name.unwrap_or_default(),
            namespace: d.metadata.namespace,
            annotations: d.metadata.annotations.unwrap_or_default(),
            stage: s.stage,
            seed,
            additional_images: s.additional_images,
            timeout: ar.init_monitor_timeout_seconds,
            disabled_post_reboot_config: flag(ar.disabled_for_post_reboot_config),
            disabled_upgrade_completion: flag(ar.disabled_for_upgrade_completion),
            disabled_init_monitor: flag(ar.disabled_init_monitor),
            extra_manifests: s.extra_manifests.unwrap_or_default(),
            oadp_content: s.oadp_content.unwrap_or_default(),
        }
    }

    pub(super) fn from_v1(d: wire::ImageBasedUpgradeV1) -> Common {
        let s = d.spec;
        let seed = s.seed_image_ref.map(|r| WireSeed {
            image: r.image,
            version: r.version,
            pull_secret: r.pull_secret_ref.map(|p| {
                (
                    p.name,
                    YamlPath::dotted("spec.seedImageRef.pullSecretRef.name"),
                )
            }),
        });
        Common {
            api: ApiVersion::V1,
            name: wire::SINGLETON_NAME.to_string(),
            namespace: d.metadata.namespace,
            annotations: d.metadata.annotations.unwrap_or_default(),
            stage: s.stage,
            seed,
            additional_images: None,
            timeout: s
                .auto_rollback_on_failure
                .and_then(|a| a.init_monitor_timeout_seconds),
            disabled_post_reboot_config: false,
            disabled_upgrade_completion: false,
            disabled_init_monitor: false,
            extra_manifests: s.extra_manifests.unwrap_or_default(),
            oadp_content: s.oadp_content.unwrap_or_default(),
        }
    }

    pub(super) fn normalise(self, warnings: &mut Vec<Problem>) -> Result<Desired, Problem> {
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        check_namespace(&namespace)
            .map_err(|m| Problem::at(YamlPath::dotted("metadata.namespace"), m))?;
        let seed = self.seed(&namespace, warnings)?;
        let additional_images = self.additional_images()?;
        let extra_manifests = refs_list("spec.extraManifests", &self.extra_manifests, warnings)?;
        let oadp_content = refs_list("spec.oadpContent", &self.oadp_content, warnings)?;
        let auto_rollback = self.auto_rollback(warnings)?;
        let image_cleanup = self.image_cleanup(warnings)?;
        self.unknown_annotations(warnings);
        Ok(Desired {
            api_version: self.api,
            name: self.name,
            namespace,
            stage: self.stage,
            seed,
            additional_images,
            extra_manifests,
            oadp_content,
            auto_rollback,
            image_cleanup,
            manual_cleanup_done: self.annotations.contains_key(ann::MANUAL_CLEANUP_DONE),
        })
    }

    fn seed(
        &self,
        namespace: &str,
        warnings: &mut Vec<Problem>,
    ) -> Result<Option<SeedRef>, Problem> {
        let base = YamlPath::dotted("spec.seedImageRef");
        let needed = self.stage != Stage::Idle;
        let empty = |s: &Option<String>| s.as_deref().unwrap_or("").is_empty();
        let seed = match &self.seed {
            Some(s) if !(empty(&s.image) && empty(&s.version) && s.pull_secret.is_none()) => s,
            _ if needed => {
                return Err(Problem::at(
                    base,
                    format!(
                        "missing; spec.stage {} needs the seed image and its version",
                        self.stage
                    ),
                ));
            }
            _ => return Ok(None),
        };
        let image = seed.image.clone().unwrap_or_default();
        let version = seed.version.clone().unwrap_or_default();
        let mut problems = Vec::new();
        let placeholder = |v: &str| v.len() > 2 && v.starts_with('<') && v.ends_with('>');
        if placeholder(&image) {
            problems.push(Problem::at(
                base.key("image"),
                format!("{image:?} is a placeholder; replace it with the seed image pull-spec"),
            ));
        } else if image.is_empty() {
            problems.push(Problem::at(
                base.key("image"),
                "missing or empty; set the seed image pull-spec",
            ));
        } else if let Err(e) = ImageRef::parse(&image) {
            problems.push(Problem::at(base.key("image"), e.to_string()));
        }
        if placeholder(&version) {
            problems.push(Problem::at(
                base.key("version"),
                format!("{version:?} is a placeholder; replace it with the target version, e.g. \"4.15.2\""),
            ));
        } else if version.is_empty() {
            problems.push(Problem::at(
                base.key("version"),
                "missing or empty; set the target version, e.g. \"4.15.2\"",
            ));
        } else if semver::Version::parse(&version).is_err() {
            problems.push(Problem::at(
                base.key("version"),
                format!("must be a semantic version like \"4.15.2\", got {version:?}"),
            ));
        }
        if let Some((name, path)) = &seed.pull_secret {
            if placeholder(name) {
                problems.push(Problem::at(
                    path.clone(),
                    format!("{name:?} is a placeholder; replace it with the pull Secret's name"),
                ));
            } else if let Err(m) = check_object_name(name) {
                problems.push(Problem::at(path.clone(), format!("Secret name {m}")));
            }
        }
        if needed {
            if let Some(first) = problems.into_iter().next() {
                return Err(first);
            }
        } else {
            for mut p in problems {
                p.message
                    .push_str(" (only a warning while spec.stage is Idle)");
                warnings.push(p);
            }
        }
        Ok(Some(SeedRef {
            image,
            version,
            pull_secret: seed.pull_secret.as_ref().map(|(name, _)| ObjectRef {
                name: name.clone(),
                namespace: namespace.to_string(),
            }),
        }))
    }

    fn additional_images(&self) -> Result<Option<ObjectRef>, Problem> {
        let base = YamlPath::dotted("spec.additionalImages");
        let Some(r) = &self.additional_images else {
            return Ok(None);
        };
        let name = r.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Ok(None);
        }
        check_object_name(name).map_err(|m| Problem::at(base.key("name"), m))?;
        let namespace = r.namespace.as_deref().unwrap_or("");
        if namespace.is_empty() {
            return Err(Problem::at(
                base.key("namespace"),
                "missing or empty; required when additionalImages.name is set",
            ));
        }
        check_namespace(namespace).map_err(|m| Problem::at(base.key("namespace"), m))?;
        Ok(Some(ObjectRef {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }))
    }

    /// A part of automatic rollback is off when either the v1alpha1 `disabled*` field is true or
    /// its annotation says `Disabled` (annotations are honoured in both generations).
    fn auto_rollback(&self, warnings: &mut Vec<Problem>) -> Result<AutoRollback, Problem> {
        let timeout_path = YamlPath::dotted("spec.autoRollbackOnFailure.initMonitorTimeoutSeconds");
        let init_monitor_timeout_seconds = match self.timeout {
            Some(t) if t < 0 => {
                return Err(Problem::at(timeout_path, format!("must be >= 0, got {t}")));
            }
            None | Some(0) => DEFAULT_INIT_MONITOR_TIMEOUT_SECONDS,
            Some(t) => t.unsigned_abs(),
        };
        let mut disabled =
            |key: &str| self.annotation_disabled(key, "automatic rollback", warnings);
        let post_reboot_config =
            !(self.disabled_post_reboot_config | disabled(ann::AUTO_ROLLBACK_POST_REBOOT_CONFIG));
        let upgrade_completion =
            !(self.disabled_upgrade_completion | disabled(ann::AUTO_ROLLBACK_UPGRADE_COMPLETION));
        let init_monitor =
            !(self.disabled_init_monitor | disabled(ann::AUTO_ROLLBACK_INIT_MONITOR));
        Ok(AutoRollback {
            init_monitor_timeout_seconds,
            init_monitor,
            post_reboot_config,
            upgrade_completion,
        })
    }

    fn image_cleanup(&self, warnings: &mut Vec<Problem>) -> Result<ImageCleanup, Problem> {
        let on_prep =
            !self.annotation_disabled(ann::IMAGE_CLEANUP_ON_PREP, "image cleanup", warnings);
        let key = ann::IMAGE_CLEANUP_DISK_USAGE_THRESHOLD_PERCENT;
        let disk_usage_threshold_percent = match self.annotations.get(key) {
            None => DEFAULT_DISK_USAGE_THRESHOLD_PERCENT,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n <= 100 && v.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => {
                    return Err(Problem::at(
                        annotation_path(key),
                        format!("must be an integer from 0 to 100, got {v:?}"),
                    ));
                }
            },
        };
        Ok(ImageCleanup {
            on_prep,
            disk_usage_threshold_percent,
        })
    }

    /// Whether the annotation says `Disabled`; any other value keeps the feature on (as in LCA)
    /// but is worth a warning, since it is almost certainly a typo.
    fn annotation_disabled(&self, key: &str, what: &str, warnings: &mut Vec<Problem>) -> bool {
        match self.annotations.get(key).map(String::as_str) {
            Some(ann::DISABLED) => true,
            Some(other) => {
                warnings.push(Problem::at(
                    annotation_path(key),
                    format!(
                        "value {other:?} is not \"Disabled\" (the only value that counts), so \
                         {what} stays enabled"
                    ),
                ));
                false
            }
            None => false,
        }
    }

    fn unknown_annotations(&self, warnings: &mut Vec<Problem>) {
        for key in self.annotations.keys() {
            if ann::KNOWN.contains(&key.as_str()) {
                continue;
            }
            if let Some(best) = closest_annotation(key) {
                warnings.push(Problem::at(
                    annotation_path(key),
                    format!("unknown annotation, ignored; did you mean {best:?}?"),
                ));
            }
        }
    }
}

/// A known annotation that `key` is probably a typo of: same domain and a similar name, or the
/// same name and a similar domain. (Comparing whole keys would match every `lca.openshift.io/`
/// annotation with every other, through the long common prefix.)
fn closest_annotation(key: &str) -> Option<&'static str> {
    let (domain, name) = key.split_once('/')?;
    ann::KNOWN.into_iter().find(|known| {
        let Some((kd, kn)) = known.split_once('/') else {
            return false;
        };
        (kd == domain && closest(name, [kn]).is_some())
            || (kn == name && closest(domain, [kd]).is_some())
    })
}

fn annotation_path(key: &str) -> YamlPath {
    YamlPath::dotted("metadata.annotations").key(key)
}

fn refs_list(
    at: &str,
    refs: &[wire::ConfigMapRef],
    warnings: &mut Vec<Problem>,
) -> Result<Vec<ObjectRef>, Problem> {
    let base = YamlPath::dotted(at);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let p = base.index(i);
        check_object_name(&r.name).map_err(|m| Problem::at(p.key("name"), m))?;
        check_namespace(&r.namespace).map_err(|m| Problem::at(p.key("namespace"), m))?;
        let o = ObjectRef {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
        };
        if !seen.insert(o.clone()) {
            warnings.push(Problem::at(
                p,
                format!("ConfigMap {o} is listed more than once"),
            ));
            continue;
        }
        out.push(o);
    }
    Ok(out)
}
