//! gzip with fixed settings, so compressed layers are reproducible.
//!
//! The gzip header carries no file name, no comment, mtime 0 and OS byte 255 ("unknown"), and
//! the compression level is fixed ([`LEVEL`]); the deflate implementation is flate2's pure-Rust
//! backend (miniz_oxide), pinned by `Cargo.lock`. The same uncompressed bytes therefore always
//! give the same compressed bytes, and so the same layer digest, with the same ibu build.

use std::io::{Read, Write};

use flate2::Compression;

/// Compression level of every gzip layer ibu writes (zlib's default trade-off).
pub const LEVEL: u32 = 6;

/// A gzip encoder with ibu's fixed settings.
pub fn encoder<W: Write>(out: W) -> flate2::write::GzEncoder<W> {
    flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, Compression::new(LEVEL))
}

/// A gzip decoder that reads every member of a (possibly multi-member) gzip stream, as Go's
/// gzip reader and so registries and podman do.
pub fn decoder<R: Read>(input: R) -> flate2::read::MultiGzDecoder<R> {
    flate2::read::MultiGzDecoder::new(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header_and_reproducible() {
        let gz = |data: &[u8]| {
            let mut e = encoder(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let a = gz(b"hello hello hello");
        assert_eq!(a, gz(b"hello hello hello"));
        // magic, deflate, no flags, mtime 0, xfl, OS 255
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[9], 255);
        let mut back = Vec::new();
        decoder(&a[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello hello hello");
    }
}
