//! ConfigMap and Secret references resolved to the drop-in tree. STUB: implemented in the spec work.

use std::path::Path;

/// Unresolvable references of `desired` (STUB).
pub fn check(_config_dir: &Path, _desired: &super::Desired) -> Vec<String> {
    Vec::new()
}
