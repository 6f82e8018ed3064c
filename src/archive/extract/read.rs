//! Assembling logical entries from the raw header sequence.
//!
//! The `tar` crate is used in raw mode (one item per 512-byte header, checksums verified, data
//! framed by the header's size field) and the extension headers are interpreted here: PAX `x`
//! records (parsed by length, see [`pax::parse_records`](crate::archive::pax::parse_records) —
//! the crate's own parser splits at newlines and mangles binary xattr values) and GNU `L`/`K`
//! long names. Doing it here also bounds them: an extension header larger than
//! [`MAX_EXTENSION`] is rejected before it is read, so a hostile archive cannot make extraction
//! buffer gigabytes of "metadata".

use std::io::Read;

use anyhow::{Context, Result};

use super::{Reason, reject};
use crate::archive::pax;

/// Largest PAX or GNU long-name header read (xattrs of one file plus a path fit easily).
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

/// PAX records and GNU long names waiting for the entry they describe.
#[derive(Default)]
pub(crate) struct Pending {
    pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// A logical entry's name, link target and PAX records.
pub(crate) struct Assembled {
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pending {
    /// If `entry` is an extension header, read and keep it and return true.
    pub fn absorb<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<bool> {
        let ty = entry.header().entry_type();
        let slot = if ty.is_pax_local_extensions() {
            0
        } else if ty.is_gnu_longname() {
            1
        } else if ty.is_gnu_longlink() {
            2
        } else {
            return Ok(false);
        };
        let at = format!("extension header at byte {}", entry.raw_header_position());
        if entry.size() > MAX_EXTENSION {
            return Err(reject(
                at.as_bytes(),
                Reason::BadPax(format!("{} bytes, more than {MAX_EXTENSION}", entry.size())),
            ));
        }
        let taken = match slot {
            0 => self.pax.is_some(),
            1 => self.long_name.is_some(),
            _ => self.long_link.is_some(),
        };
        if taken {
            return Err(reject(
                at.as_bytes(),
                Reason::BadPax("two extension headers of one kind for one entry".into()),
            ));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut data)
            .with_context(|| format!("reading the {at}"))?;
        match slot {
            0 => {
                let records = pax::parse_records(&data)
                    .map_err(|e| reject(at.as_bytes(), Reason::BadPax(format!("{e:#}"))))?;
                self.pax = Some(records);
            }
            1 => self.long_name = Some(trim_nuls(data)),
            _ => self.long_link = Some(trim_nuls(data)),
        }
        Ok(true)
    }

    /// Whether extension headers wait for an entry.
    pub fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }

    /// The name, link and records of the entry with `header`, consuming what was pending. PAX
    /// `path`/`linkpath` win over GNU long names, which win over the header fields.
    pub fn take(&mut self, header: &tar::Header) -> Assembled {
        let pax = self.pax.take().unwrap_or_default();
        let find = |key: &[u8]| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let path = find(b"path")
            .or_else(|| self.long_name.take())
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = find(b"linkpath")
            .or_else(|| self.long_link.take())
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        self.long_name = None;
        self.long_link = None;
        Assembled { path, link, pax }
    }
}

fn trim_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}
