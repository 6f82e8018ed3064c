//! Measurements the VM scenarios commit: each a section of `benches/RESULTS.md` between
//! `<!-- begin NAME -->` and `<!-- end NAME -->`, rewritten by the run that measured it (the
//! same convention as ibu's benchmarks).

use std::path::Path;

use anyhow::Result;

/// Replace (or append) section `name` of `benches/RESULTS.md` with `body`.
pub fn write_section(repo: &Path, name: &str, body: &str) -> Result<()> {
    let path = repo.join("benches/RESULTS.md");
    let text = fs_err::read_to_string(&path).unwrap_or_default();
    let begin = format!("<!-- begin {name} -->");
    let end = format!("<!-- end {name} -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{section}{}", &text[..a], &text[b + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    fs_err::write(&path, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_or_appended() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("benches")).unwrap();
        let f = dir.path().join("benches/RESULTS.md");
        std::fs::write(&f, "# R\n<!-- begin a -->\nold\n<!-- end a -->\ntail\n").unwrap();
        write_section(dir.path(), "a", "new\n").unwrap();
        write_section(dir.path(), "b", "bee").unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "# R\n<!-- begin a -->\nnew\n<!-- end a -->\ntail\n<!-- begin b -->\nbee\n<!-- end b -->\n"
        );
    }
}
