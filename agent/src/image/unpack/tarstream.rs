//! Reading a tar stream without trusting a size it announces.
//!
//! The `tar` crate reads a PAX header or a GNU long name into memory
//! whole, however large its header says it is (a 256 MiB long name took a
//! pull to 3.7 GB), and expands sparse maps without bound. So only its
//! header *types* are used here (field parsing, checksums, GNU sparse
//! headers); this module walks the stream itself and checks every size
//! against [`UnpackLimits`] before acting on it:
//!
//! - PAX (`x`, `g`) and GNU long name/link (`L`, `K`) records are refused
//!   above `max_header_bytes` before a byte of them is read;
//! - paths and link targets above `max_path_bytes` are refused;
//! - sparse files (old GNU `S` entries and PAX formats 0.0, 0.1 and 1.0,
//!   as Go's archive/tar reads them) are refused above
//!   `max_sparse_regions`, and their map is validated (ordered, no
//!   overlaps, inside the real size, data sizes adding up);
//! - the whole stream is refused once it passes `max_layer_bytes`.
//!
//! Semantics follow Go's archive/tar, which containerd unpacks with: a PAX
//! `path`/`linkpath` wins over a GNU long name, PAX `size`, `uid`, `gid`
//! and `mtime` override the header, PAX global headers are skipped, and a
//! zero block ends the archive.

use std::io::{self, Read};

use tar::{EntryType, GnuExtSparseHeader, Header};

use super::limits::{LimitError, Record, UnpackLimits, limit_in, shown_path};

const BLOCK_LEN: usize = 512;
const BLOCK: u64 = BLOCK_LEN as u64;
/// Digits of the largest decimal number a sparse map may hold (u64).
const MAX_DIGITS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("reading the tar stream")]
    Read(#[source] io::Error),
    #[error("bad tar archive at byte {offset}: {detail}")]
    Malformed { offset: u64, detail: String },
}

impl From<io::Error> for TarError {
    fn from(err: io::Error) -> Self {
        match limit_in(&err) {
            Some(limit) => Self::Limit(limit.clone()),
            None => Self::Read(err),
        }
    }
}

/// One entry, with its extension records applied.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// The entry's own header; PAX `uid`/`gid` are already applied to it.
    pub header: Header,
    pub kind: EntryType,
    pub path: Vec<u8>,
    /// The link target, for entries that have one.
    pub link: Option<Vec<u8>>,
    /// Bytes [`TarStream::data`] yields (a sparse file's real size).
    pub size: u64,
    /// PAX `mtime` (decimal seconds with an optional fraction), if any.
    pub pax_mtime: Option<Vec<u8>>,
    /// PAX `SCHILY.xattr.<name>` records: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the entry was stored sparse.
    pub sparse: bool,
}

/// Where the current entry's data is.
struct Data {
    /// Raw bytes of the entry in the stream not consumed yet.
    raw_left: u64,
    /// Padding after the raw bytes.
    pad: u64,
    /// Logical position and size of what [`TarStream::data`] yields.
    pos: u64,
    size: u64,
    /// Data regions (offset, length) of a sparse file, ascending.
    regions: Option<Vec<(u64, u64)>>,
    next_region: usize,
}

impl Data {
    fn none() -> Self {
        Self {
            raw_left: 0,
            pad: 0,
            pos: 0,
            size: 0,
            regions: None,
            next_region: 0,
        }
    }
}

pub struct TarStream<R> {
    inner: R,
    limits: UnpackLimits,
    /// Bytes read from `inner`.
    position: u64,
    data: Data,
    ended: bool,
}

/// What the extension records before an entry said.
#[derive(Default)]
struct Extensions {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl<R: Read> TarStream<R> {
    pub fn new(inner: R, limits: UnpackLimits) -> Self {
        Self {
            inner,
            limits,
            position: 0,
            data: Data::none(),
            ended: false,
        }
    }

    /// The next entry, after skipping what is left of the previous one.
    /// `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        self.skip_data()?;
        if self.ended {
            return Ok(None);
        }
        let mut extensions = Extensions::default();
        loop {
            let offset = self.position;
            let Some(block) = self.read_block()? else {
                return self.end(&extensions, offset);
            };
            if block.iter().all(|&b| b == 0) {
                return self.end(&extensions, offset);
            }
            let header = Header::from_byte_slice(&block).clone();
            check_checksum(&header).map_err(|detail| malformed(offset, detail))?;
            let kind = header.entry_type();
            let record = match kind {
                EntryType::XHeader => Record::PaxHeader,
                EntryType::XGlobalHeader => Record::PaxGlobalHeader,
                EntryType::GNULongName => Record::GnuLongName,
                EntryType::GNULongLink => Record::GnuLongLink,
                _ => return self.entry(header, extensions, offset).map(Some),
            };
            let size = header
                .entry_size()
                .map_err(|err| malformed(offset, err.to_string()))?;
            if size > self.limits.max_header_bytes {
                return Err(LimitError::Record {
                    record,
                    size,
                    limit: self.limits.max_header_bytes,
                }
                .into());
            }
            let bytes = self.read_record(size)?;
            let slot = match record {
                // Global headers describe the archive, not an entry: skipped,
                // as containerd does.
                Record::PaxGlobalHeader => continue,
                Record::PaxHeader => &mut extensions.pax,
                Record::GnuLongName => &mut extensions.long_name,
                Record::GnuLongLink => &mut extensions.long_link,
            };
            if slot.is_some() {
                return Err(malformed(offset, format!("two {record}s for one entry")));
            }
            *slot = Some(bytes);
        }
    }

    /// Reads the data of the entry [`TarStream::next_entry`] returned last.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { stream: self }
    }

    /// Reads the stream to its end (what follows the end-of-archive marker
    /// counts for a layer's diffID), within the stream limit.
    pub fn drain(&mut self) -> Result<(), TarError> {
        self.skip_data()?;
        let mut buf = vec![0u8; 64 << 10];
        while self.read_inner(&mut buf)? > 0 {}
        Ok(())
    }

    fn end(&mut self, extensions: &Extensions, offset: u64) -> Result<Option<TarEntry>, TarError> {
        self.ended = true;
        if extensions.pax.is_some()
            || extensions.long_name.is_some()
            || extensions.long_link.is_some()
        {
            return Err(malformed(
                offset,
                "the archive ends after extension records, without their entry".into(),
            ));
        }
        Ok(None)
    }

    /// Builds the entry `header` describes, with its extension records.
    fn entry(
        &mut self,
        mut header: Header,
        extensions: Extensions,
        offset: u64,
    ) -> Result<TarEntry, TarError> {
        let bad = |detail: String| malformed(offset, detail);
        let records = match &extensions.pax {
            Some(pax) => parse_pax(pax).map_err(|detail| bad(format!("PAX header: {detail}")))?,
            None => Vec::new(),
        };
        let pax = |key: &[u8]| last(&records, key);
        let pax_number = |key: &str| -> Result<Option<u64>, TarError> {
            pax(key.as_bytes())
                .map(|value| {
                    parse_decimal(value).ok_or_else(|| {
                        bad(format!(
                            "PAX {key} {:?} is not a number",
                            String::from_utf8_lossy(value)
                        ))
                    })
                })
                .transpose()
        };
        let kind = header.entry_type();
        let mut path = match (pax(b"path"), extensions.long_name) {
            (Some(path), _) => path.to_vec(),
            (None, Some(long)) => cut_at_nul(long),
            (None, None) => header.path_bytes().into_owned(),
        };
        let link = match (pax(b"linkpath"), extensions.long_link) {
            (Some(link), _) => Some(link.to_vec()),
            (None, Some(long)) => Some(cut_at_nul(long)),
            (None, None) => header.link_name_bytes().map(|l| l.into_owned()),
        };
        let mut raw_size = header
            .entry_size()
            .map_err(|err| bad(format!("size: {err}")))?;
        if let Some(size) = pax_number("size")? {
            raw_size = size;
        }
        if let Some(uid) = pax_number("uid")? {
            header.set_uid(uid);
        }
        if let Some(gid) = pax_number("gid")? {
            header.set_gid(gid);
        }
        let xattrs = records
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix(b"SCHILY.xattr.")
                    .map(|name| (name.to_vec(), value.to_vec()))
            })
            .collect();
        let pax_mtime = pax(b"mtime").map(<[u8]>::to_vec);
        let sparse_kind = if kind == EntryType::GNUSparse {
            Some(SparseFormat::OldGnu)
        } else {
            sparse_format(&records)
        };
        if let Some(format) = sparse_kind
            && format != SparseFormat::OldGnu
            && let Some(name) = pax(b"GNU.sparse.name")
        {
            path = name.to_vec();
        }
        self.check_path(&path, "path")?;
        if let Some(link) = &link {
            self.check_path_len(&path, link, "link target")?;
        }
        self.data = Data {
            raw_left: raw_size,
            pad: padding(raw_size),
            pos: 0,
            size: raw_size,
            regions: None,
            next_region: 0,
        };
        if let Some(format) = sparse_kind {
            let (regions, real_size) = self.sparse_map(format, &header, &records, &path, offset)?;
            self.data.size = real_size;
            self.data.regions = Some(regions);
        }
        Ok(TarEntry {
            kind,
            path,
            link,
            size: self.data.size,
            pax_mtime,
            xattrs,
            sparse: sparse_kind.is_some(),
            header,
        })
    }

    fn check_path(&self, path: &[u8], what: &'static str) -> Result<(), TarError> {
        self.check_path_len(path, path, what)
    }

    /// `value` (the entry's path or link target) fits the path limit.
    fn check_path_len(
        &self,
        path: &[u8],
        value: &[u8],
        what: &'static str,
    ) -> Result<(), TarError> {
        let limit = self.limits.max_path_bytes;
        if value.len() > limit {
            return Err(LimitError::PathTooLong {
                path: shown_path(path),
                what,
                len: value.len(),
                limit,
            }
            .into());
        }
        Ok(())
    }

    /// The data regions and real size of a sparse entry, read from where
    /// its `format` keeps them, validated against the entry's data size.
    fn sparse_map(
        &mut self,
        format: SparseFormat,
        header: &Header,
        records: &[PaxRecord<'_>],
        path: &[u8],
        offset: u64,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let bad = |detail: String| malformed(offset, format!("sparse file: {detail}"));
        let mut map = SparseMap {
            regions: Vec::new(),
            limit: self.limits.max_sparse_regions,
            path,
        };
        let real_size = match format {
            SparseFormat::OldGnu => {
                let gnu = header
                    .as_gnu()
                    .ok_or_else(|| bad("a GNU sparse entry without a GNU header".into()))?;
                for region in &gnu.sparse {
                    map.push_gnu(region)
                        .map_err(|e| self.sparse_err(e, offset))?;
                }
                let mut extended = gnu.is_extended();
                let mut blocks = 0usize;
                while extended {
                    blocks += 1;
                    if blocks > self.limits.max_sparse_regions {
                        return Err(map.too_many().into());
                    }
                    let at = self.position;
                    let block = self
                        .read_block()?
                        .ok_or_else(|| malformed(at, "sparse header cut short".into()))?;
                    let mut ext = GnuExtSparseHeader::new();
                    ext.as_mut_bytes().copy_from_slice(&block);
                    for region in ext.sparse() {
                        map.push_gnu(region)
                            .map_err(|e| self.sparse_err(e, offset))?;
                    }
                    extended = ext.is_extended();
                }
                gnu.real_size().map_err(|err| bad(err.to_string()))?
            }
            SparseFormat::Pax00 => {
                // Pairs in record order: an offset, then its length.
                let mut start = None;
                for (key, value) in records {
                    let number = || {
                        parse_decimal(value).ok_or_else(|| bad("bad GNU.sparse.* number".into()))
                    };
                    match (*key, start) {
                        (b"GNU.sparse.offset", None) => start = Some(number()?),
                        (b"GNU.sparse.numbytes", Some(at)) => {
                            map.push(at, number()?)?;
                            start = None;
                        }
                        (b"GNU.sparse.offset" | b"GNU.sparse.numbytes", _) => {
                            return Err(
                                bad("GNU.sparse.offset and numbytes do not pair up".into()),
                            );
                        }
                        _ => {}
                    }
                }
                pax_real_size(records).ok_or_else(|| bad("no GNU.sparse.size".into()))?
            }
            SparseFormat::Pax01 => {
                let text = last(records, b"GNU.sparse.map").unwrap_or_default();
                let mut numbers = text.split(|&b| b == b',').filter(|n| !n.is_empty());
                while let Some(start) = numbers.next() {
                    let length = numbers
                        .next()
                        .ok_or_else(|| bad("GNU.sparse.map has an odd count".into()))?;
                    let number =
                        |text| parse_decimal(text).ok_or_else(|| bad("bad GNU.sparse.map".into()));
                    map.push(number(start)?, number(length)?)?;
                }
                pax_real_size(records).ok_or_else(|| bad("no GNU.sparse.size".into()))?
            }
            SparseFormat::Pax10 => {
                let map_bytes = self.read_sparse_map_1_0(&mut map, offset)?;
                self.data.raw_left = self
                    .data
                    .raw_left
                    .checked_sub(map_bytes)
                    .ok_or_else(|| bad("the map is larger than the entry".into()))?;
                pax_real_size(records).ok_or_else(|| bad("no GNU.sparse.realsize".into()))?
            }
        };
        let regions = map.regions;
        let mut end = 0u64;
        let mut stored = 0u64;
        for &(start, length) in &regions {
            let region_end = start
                .checked_add(length)
                .ok_or_else(|| bad("a region ends past 2^64".into()))?;
            if start < end {
                return Err(bad("regions overlap or are out of order".into()));
            }
            end = region_end;
            stored = stored
                .checked_add(length)
                .ok_or_else(|| bad("the regions hold more than 2^64 bytes".into()))?;
        }
        if end > real_size {
            return Err(bad(format!(
                "a region ends at {end}, past the real size {real_size}"
            )));
        }
        if stored != self.data.raw_left {
            return Err(bad(format!(
                "the regions hold {stored} bytes but the entry stores {}",
                self.data.raw_left
            )));
        }
        Ok((regions, real_size))
    }

    fn sparse_err(&self, err: SparseError, offset: u64) -> TarError {
        match err {
            SparseError::Limit(limit) => limit.into(),
            SparseError::Bad(detail) => malformed(offset, format!("sparse file: {detail}")),
        }
    }

    /// PAX sparse 1.0 keeps its map in decimal lines at the start of the
    /// data, padded to a block: a count, then offset and length pairs.
    /// Returns the bytes the map took.
    fn read_sparse_map_1_0(
        &mut self,
        map: &mut SparseMap<'_>,
        offset: u64,
    ) -> Result<u64, TarError> {
        let mut lines = MapLines {
            block: [0; BLOCK_LEN],
            used: BLOCK_LEN,
            consumed: 0,
            available: self.data.raw_left,
            offset,
        };
        let count = lines.number(self)?;
        if count > map.limit as u64 {
            return Err(map.too_many().into());
        }
        for _ in 0..count {
            let start = lines.number(self)?;
            let length = lines.number(self)?;
            map.push(start, length)?;
        }
        Ok(lines.consumed)
    }

    /// Discards what is left of the current entry and its padding.
    fn skip_data(&mut self) -> Result<(), TarError> {
        let mut left = self.data.raw_left.saturating_add(self.data.pad);
        let mut buf = [0u8; 8192];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).expect("at most the buffer");
            let n = self.read_inner(&mut buf[..want])?;
            if n == 0 {
                return Err(malformed(
                    self.position,
                    "the archive ends inside an entry".into(),
                ));
            }
            left -= n as u64;
        }
        self.data = Data::none();
        Ok(())
    }

    /// An extension record's bytes (at most `max_header_bytes`), and its
    /// padding.
    fn read_record(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        let len = usize::try_from(size).expect("checked against the header limit");
        let mut bytes = vec![0u8; len];
        read_exact(self, &mut bytes)?;
        self.data = Data {
            pad: padding(size),
            ..Data::none()
        };
        self.skip_data()?;
        Ok(bytes)
    }

    /// One header block; `None` at a clean end of the stream.
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK_LEN]>, TarError> {
        let mut block = [0u8; BLOCK_LEN];
        let mut filled = 0;
        while filled < block.len() {
            let n = self.read_inner(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(malformed(
                    self.position,
                    "the archive ends inside a header".into(),
                ));
            }
            filled += n;
        }
        Ok(Some(block))
    }

    /// Every read of the stream: counted against the stream limit.
    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.position += n as u64;
        if self.position > self.limits.max_layer_bytes {
            return Err(io::Error::other(LimitError::StreamTooLarge {
                limit: self.limits.max_layer_bytes,
            }));
        }
        Ok(n)
    }

    /// Logical data of the current entry into `buf`: stored bytes, and
    /// zeros for a sparse file's holes.
    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let data = &mut self.data;
            if data.pos >= data.size || buf.is_empty() {
                return Ok(0);
            }
            let room = buf.len() as u64;
            let (zeros, stored) = match &data.regions {
                None => (0, (data.size - data.pos).min(room)),
                Some(regions) => match regions.get(data.next_region) {
                    Some(&(start, _)) if data.pos < start => ((start - data.pos).min(room), 0),
                    Some(&(start, length)) if data.pos < start + length => {
                        (0, (start + length - data.pos).min(room))
                    }
                    Some(_) => {
                        data.next_region += 1;
                        continue;
                    }
                    None => ((data.size - data.pos).min(room), 0),
                },
            };
            if zeros > 0 {
                let n = usize::try_from(zeros).expect("at most the buffer");
                buf[..n].fill(0);
                data.pos += zeros;
                return Ok(n);
            }
            let want = usize::try_from(stored.min(data.raw_left)).expect("at most the buffer");
            if want == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the entry's data ends early",
                ));
            }
            let n = self.read_inner(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive ends inside an entry",
                ));
            }
            self.data.raw_left -= n as u64;
            self.data.pos += n as u64;
            return Ok(n);
        }
    }
}

/// The current entry's data, as a reader.
pub struct EntryData<'a, R> {
    stream: &'a mut TarStream<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_data(buf)
    }
}

fn read_exact<R: Read>(stream: &mut TarStream<R>, buf: &mut [u8]) -> Result<(), TarError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = stream.read_inner(&mut buf[filled..])?;
        if n == 0 {
            return Err(malformed(
                stream.position,
                "the archive ends inside an extension record".into(),
            ));
        }
        filled += n;
    }
    Ok(())
}

fn malformed(offset: u64, detail: String) -> TarError {
    TarError::Malformed { offset, detail }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Unsigned (POSIX) or signed (old Sun tar) header checksum, as Go accepts.
fn check_checksum(header: &Header) -> Result<(), String> {
    let bytes = header.as_bytes();
    let stored = header
        .cksum()
        .map_err(|err| format!("checksum field: {err}"))?;
    let fields = bytes[..148].iter().chain(&bytes[156..]);
    let unsigned: u32 = fields.clone().map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
    #[allow(clippy::cast_possible_wrap)]
    let signed: i64 = fields.map(|&b| i64::from(b as i8)).sum::<i64>() + 8 * 32;
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err(format!(
            "header checksum {stored} does not match its content ({unsigned})"
        ))
    }
}

/// A PAX record: key and value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// PAX records (`<len> <key>=<value>\n`), parsed by their length as the
/// format defines (values may hold newlines).
fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a record without a length")?;
        let len = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|&len| len > space + 1 && len <= data.len())
            .ok_or("a record with a bad length")?;
        let record = &data[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or("a record without its newline")?;
        let equals = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a record without `=`")?;
        records.push((&record[..equals], &record[equals + 1..]));
        data = &data[len..];
    }
    Ok(records)
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > MAX_DIGITS || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A GNU long name or link: a NUL ends it.
fn cut_at_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    bytes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SparseFormat {
    /// GNU tar's `S` entries: regions in the header and extension blocks.
    OldGnu,
    /// PAX 0.0: repeated `GNU.sparse.offset`/`GNU.sparse.numbytes`.
    Pax00,
    /// PAX 0.1: `GNU.sparse.map` = `offset,length,…`.
    Pax01,
    /// PAX 1.0: the map in decimal lines at the start of the data.
    Pax10,
}

fn sparse_format(records: &[PaxRecord<'_>]) -> Option<SparseFormat> {
    let pax = |key: &[u8]| last(records, key);
    match (pax(b"GNU.sparse.major"), pax(b"GNU.sparse.minor")) {
        (Some(b"1"), Some(b"0")) => Some(SparseFormat::Pax10),
        (Some(b"0"), Some(b"1")) => Some(SparseFormat::Pax01),
        _ if pax(b"GNU.sparse.map").is_some() => Some(SparseFormat::Pax01),
        _ if pax(b"GNU.sparse.offset").is_some() => Some(SparseFormat::Pax00),
        _ => None,
    }
}

fn pax_real_size(records: &[PaxRecord<'_>]) -> Option<u64> {
    last(records, b"GNU.sparse.realsize")
        .or_else(|| last(records, b"GNU.sparse.size"))
        .and_then(parse_decimal)
}

/// The value of the last record named `key` (later records win).
fn last<'a>(records: &[PaxRecord<'a>], key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

/// Decimal lines of a PAX 1.0 sparse map, read a block at a time from the
/// entry's data.
struct MapLines {
    block: [u8; BLOCK_LEN],
    used: usize,
    /// Bytes of the entry's data read so far.
    consumed: u64,
    /// Bytes of the entry's data there are.
    available: u64,
    offset: u64,
}

impl MapLines {
    fn number<R: Read>(&mut self, stream: &mut TarStream<R>) -> Result<u64, TarError> {
        let bad = |detail: &str| malformed(self.offset, format!("sparse map: {detail}"));
        let mut digits = 0usize;
        let mut value = 0u64;
        loop {
            if self.used == self.block.len() {
                if self.consumed + BLOCK > self.available {
                    return Err(bad("cut short"));
                }
                read_exact(stream, &mut self.block)?;
                self.consumed += BLOCK;
                self.used = 0;
            }
            let byte = self.block[self.used];
            self.used += 1;
            match byte {
                b'0'..=b'9' if digits < MAX_DIGITS => {
                    digits += 1;
                    value = value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(byte - b'0')))
                        .ok_or_else(|| bad("a number past 2^64"))?;
                }
                b'\n' if digits > 0 => return Ok(value),
                _ => return Err(bad("not a decimal line")),
            }
        }
    }
}

enum SparseError {
    Limit(LimitError),
    Bad(String),
}

/// A sparse map being read, bounded by the region limit.
struct SparseMap<'p> {
    regions: Vec<(u64, u64)>,
    limit: usize,
    path: &'p [u8],
}

impl SparseMap<'_> {
    fn push(&mut self, start: u64, length: u64) -> Result<(), LimitError> {
        if length == 0 {
            return Ok(());
        }
        if self.regions.len() >= self.limit {
            return Err(self.too_many());
        }
        self.regions.push((start, length));
        Ok(())
    }

    fn push_gnu(&mut self, region: &tar::GnuSparseHeader) -> Result<(), SparseError> {
        if region.is_empty() {
            return Ok(());
        }
        let start = region
            .offset()
            .map_err(|e| SparseError::Bad(e.to_string()))?;
        let length = region
            .length()
            .map_err(|e| SparseError::Bad(e.to_string()))?;
        self.push(start, length).map_err(SparseError::Limit)
    }

    fn too_many(&self) -> LimitError {
        LimitError::SparseRegions {
            path: shown_path(self.path),
            limit: self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One header block, with the path written raw into the name field.
    fn header(kind: EntryType, path: &[u8], size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header
    }

    /// `header` plus `data`, padded to whole blocks. A header of size 0
    /// gets the size of `data`; any other size is kept (to lie).
    fn member(mut header: Header, data: &[u8]) -> Vec<u8> {
        if header.entry_size().expect("size") == 0 {
            header.set_size(data.len() as u64);
        }
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(data);
        bytes.resize(
            bytes.len() + usize::try_from(padding(data.len() as u64)).expect("small"),
            0,
        );
        bytes
    }

    fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() != body.to_string().len() {
                len += 1;
            }
            out.extend_from_slice(format!("{len} {key}=").as_bytes());
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out
    }

    fn archive(members: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = members.concat();
        bytes.extend_from_slice(&[0; 1024]);
        bytes
    }

    fn stream(bytes: &[u8]) -> TarStream<&[u8]> {
        TarStream::new(bytes, UnpackLimits::default())
    }

    fn read_all(stream: &mut TarStream<&[u8]>) -> Vec<u8> {
        let mut data = Vec::new();
        stream.data().read_to_end(&mut data).expect("data");
        data
    }

    fn limit(err: TarError) -> LimitError {
        match err {
            TarError::Limit(limit) => limit,
            other => panic!("expected a limit, got {other}"),
        }
    }

    #[test]
    fn extension_records_over_the_limit_are_refused_before_they_are_read() {
        // Only the header is there: a reader that tried to read the 256 MiB
        // would fail on the missing data instead.
        for (kind, record) in [
            (EntryType::XHeader, Record::PaxHeader),
            (EntryType::XGlobalHeader, Record::PaxGlobalHeader),
            (EntryType::GNULongName, Record::GnuLongName),
            (EntryType::GNULongLink, Record::GnuLongLink),
        ] {
            let bytes = member(header(kind, b"././@LongLink", 256 << 20), b"");
            let err = stream(&bytes).next_entry().expect_err("refused");
            assert_eq!(
                limit(err),
                LimitError::Record {
                    record,
                    size: 256 << 20,
                    limit: 1 << 20
                }
            );
        }
    }

    #[test]
    fn records_at_the_limit_are_read() {
        let name = vec![b'n'; 1000];
        let bytes = archive(&[
            member(
                header(EntryType::GNULongName, b"././@LongLink", 1001),
                &[&name[..], b"\0"].concat(),
            ),
            member(header(EntryType::Regular, b"short", 0), b""),
        ]);
        let limits = UnpackLimits {
            max_header_bytes: 1001,
            ..UnpackLimits::default()
        };
        let mut tar = TarStream::new(&bytes[..], limits);
        let entry = tar.next_entry().expect("read").expect("entry");
        assert_eq!(entry.path, name);
    }

    #[test]
    fn paths_and_link_targets_over_the_limit_are_refused() {
        let long = vec![b'a'; 4097];
        let bytes = archive(&[
            member(
                header(EntryType::XHeader, b"pax", 0),
                &pax(&[("path", &long)]),
            ),
            member(header(EntryType::Regular, b"x", 0), b""),
        ]);
        assert!(matches!(
            limit(stream(&bytes).next_entry().expect_err("refused")),
            LimitError::PathTooLong {
                what: "path",
                len: 4097,
                limit: 4096,
                ..
            }
        ));
        let bytes = archive(&[
            member(
                header(EntryType::GNULongLink, b"././@LongLink", 4097),
                &long,
            ),
            member(header(EntryType::Symlink, b"link", 0), b""),
        ]);
        assert!(matches!(
            limit(stream(&bytes).next_entry().expect_err("refused")),
            LimitError::PathTooLong {
                what: "link target",
                ..
            }
        ));
    }

    #[test]
    fn pax_wins_over_gnu_long_names_and_the_header_as_in_go() {
        let data = b"0123456789";
        let mut big_header = header(EntryType::Regular, b"header-name", 3);
        big_header.set_uid(1);
        let bytes = archive(&[
            member(
                header(EntryType::GNULongName, b"././@LongLink", 9),
                b"gnu-name\0",
            ),
            member(
                header(EntryType::XHeader, b"pax", 0),
                &pax(&[
                    ("path", b"pax-name"),
                    ("size", b"10"),
                    ("uid", b"70000"),
                    ("mtime", b"1700000000.5"),
                    ("SCHILY.xattr.user.note", b"line1\nline2"),
                ]),
            ),
            member(big_header, data),
            member(header(EntryType::Regular, b"next", 0), b""),
        ]);
        let mut tar = stream(&bytes);
        let entry = tar.next_entry().expect("read").expect("entry");
        assert_eq!(entry.path, b"pax-name");
        assert_eq!(entry.size, 10);
        assert_eq!(entry.header.uid().expect("uid"), 70000);
        assert_eq!(entry.pax_mtime.as_deref(), Some(&b"1700000000.5"[..]));
        assert_eq!(
            entry.xattrs,
            [(b"user.note".to_vec(), b"line1\nline2".to_vec())]
        );
        assert_eq!(read_all(&mut tar), data);
        let next = tar.next_entry().expect("read").expect("entry");
        assert_eq!(next.path, b"next");
        assert!(tar.next_entry().expect("end").is_none());
    }

    #[test]
    fn gnu_long_names_apply_without_pax_and_global_headers_are_skipped() {
        let bytes = archive(&[
            member(
                header(EntryType::XGlobalHeader, b"global", 0),
                &pax(&[("comment", b"x")]),
            ),
            member(
                header(EntryType::GNULongName, b"././@LongLink", 9),
                b"gnu-name\0",
            ),
            member(header(EntryType::Regular, b"short", 0), b""),
        ]);
        let entry = stream(&bytes).next_entry().expect("read").expect("entry");
        assert_eq!(entry.path, b"gnu-name");
    }

    #[test]
    fn malformed_archives_are_errors_not_panics() {
        let mut bad = header(EntryType::Regular, b"file", 0);
        bad.set_cksum();
        bad.as_old_mut().name[0] = b'g';
        let mut bytes = bad.as_bytes().to_vec();
        bytes.extend_from_slice(&[0; 1024]);
        assert!(matches!(
            stream(&bytes).next_entry(),
            Err(TarError::Malformed { .. })
        ));
        let dangling = member(
            header(EntryType::GNULongName, b"././@LongLink", 4),
            b"abc\0",
        );
        assert!(matches!(
            stream(&archive(&[dangling])).next_entry(),
            Err(TarError::Malformed { .. })
        ));
        let cut = member(header(EntryType::Regular, b"file", 100), b"short");
        let mut tar = stream(&cut[..512 + 5]);
        tar.next_entry().expect("header").expect("entry");
        assert!(tar.data().read_to_end(&mut Vec::new()).is_err());
        let bad_pax = member(header(EntryType::XHeader, b"pax", 0), b"99 path=x\n");
        assert!(matches!(
            stream(&archive(&[
                bad_pax,
                member(header(EntryType::Regular, b"f", 0), b"")
            ]))
            .next_entry(),
            Err(TarError::Malformed { .. })
        ));
    }

    #[test]
    fn the_stream_limit_stops_data_and_trailing_bytes() {
        let data = vec![7u8; 4096];
        let bytes = archive(&[member(header(EntryType::Regular, b"f", 4096), &data)]);
        let limits = UnpackLimits {
            max_layer_bytes: 2048,
            ..UnpackLimits::default()
        };
        let mut tar = TarStream::new(&bytes[..], limits);
        tar.next_entry().expect("header").expect("entry");
        let err = tar.data().read_to_end(&mut Vec::new()).expect_err("over");
        assert_eq!(
            limit_in(&err),
            Some(&LimitError::StreamTooLarge { limit: 2048 })
        );
        let mut junk = archive(&[member(header(EntryType::Regular, b"f", 0), b"")]);
        junk.extend_from_slice(&[1; 4096]);
        let mut tar = TarStream::new(&junk[..], limits);
        tar.next_entry().expect("entry");
        assert!(tar.next_entry().expect("end").is_none());
        assert!(matches!(
            tar.drain(),
            Err(TarError::Limit(LimitError::StreamTooLarge { .. }))
        ));
    }

    /// An old GNU sparse entry: `regions` in the header, `real_size` bytes.
    fn gnu_sparse(regions: &[(u64, u64)], real_size: u64, data: &[u8]) -> Vec<u8> {
        let mut header = header(EntryType::GNUSparse, b"sparse", data.len() as u64);
        let gnu = header.as_gnu_mut().expect("gnu header");
        for (slot, &(offset, length)) in gnu.sparse.iter_mut().zip(regions) {
            slot.set_offset(offset);
            slot.set_length(length);
        }
        gnu.set_real_size(real_size);
        member(header, data)
    }

    fn expected_sparse(regions: &[(u64, u64, u8)], real_size: usize) -> Vec<u8> {
        let mut out = vec![0u8; real_size];
        for &(offset, length, byte) in regions {
            let offset = usize::try_from(offset).expect("small");
            out[offset..offset + usize::try_from(length).expect("small")].fill(byte);
        }
        out
    }

    #[test]
    fn old_gnu_sparse_files_expand_their_holes() {
        let data = [vec![b'a'; 512], vec![b'b'; 512]].concat();
        let bytes = archive(&[gnu_sparse(&[(0, 512), (4096, 512)], 8192, &data)]);
        let mut tar = stream(&bytes);
        let entry = tar.next_entry().expect("read").expect("entry");
        assert!(entry.sparse);
        assert_eq!(entry.size, 8192);
        assert_eq!(
            read_all(&mut tar),
            expected_sparse(&[(0, 512, b'a'), (4096, 512, b'b')], 8192)
        );
    }

    #[test]
    fn old_gnu_sparse_extension_blocks_add_regions() {
        let regions: Vec<(u64, u64)> = (0..5).map(|i| (i * 1024, 512)).collect();
        let mut head = header(EntryType::GNUSparse, b"sparse", 5 * 512);
        let gnu = head.as_gnu_mut().expect("gnu header");
        for (slot, &(offset, length)) in gnu.sparse.iter_mut().zip(&regions) {
            slot.set_offset(offset);
            slot.set_length(length);
        }
        gnu.set_real_size(8192);
        gnu.set_is_extended(true);
        head.set_cksum();
        let mut ext = GnuExtSparseHeader::new();
        ext.sparse_mut()[0].set_offset(regions[4].0);
        ext.sparse_mut()[0].set_length(regions[4].1);
        let data = vec![b'x'; 5 * 512];
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(ext.as_bytes());
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&[0; 1024]);
        let mut tar = stream(&bytes);
        assert_eq!(tar.next_entry().expect("read").expect("entry").size, 8192);
        let expected: Vec<(u64, u64, u8)> = regions.iter().map(|&(o, l)| (o, l, b'x')).collect();
        assert_eq!(read_all(&mut tar), expected_sparse(&expected, 8192));
        assert!(tar.next_entry().expect("end").is_none());
    }

    #[test]
    fn sparse_maps_over_the_region_limit_or_inconsistent_are_refused() {
        let data = vec![b'a'; 1536];
        let bytes = archive(&[gnu_sparse(
            &[(0, 512), (1024, 512), (2048, 512)],
            4096,
            &data,
        )]);
        let limits = UnpackLimits {
            max_sparse_regions: 2,
            ..UnpackLimits::default()
        };
        assert!(matches!(
            limit(
                TarStream::new(&bytes[..], limits)
                    .next_entry()
                    .expect_err("refused")
            ),
            LimitError::SparseRegions { limit: 2, .. }
        ));
        for (regions, real_size) in [
            // Overlapping.
            (&[(0, 1024), (512, 512)][..], 4096),
            // Past the real size.
            (&[(0, 512), (4096, 1024)][..], 4096),
        ] {
            let bytes = archive(&[gnu_sparse(regions, real_size, &data)]);
            assert!(
                matches!(stream(&bytes).next_entry(), Err(TarError::Malformed { .. })),
                "{regions:?}"
            );
        }
        // Regions holding more than the entry stores.
        let bytes = archive(&[gnu_sparse(&[(0, 4096)], 8192, &data)]);
        assert!(matches!(
            stream(&bytes).next_entry(),
            Err(TarError::Malformed { .. })
        ));
    }

    #[test]
    fn pax_sparse_formats_read_as_go_reads_them() {
        let data = [vec![b'a'; 512], vec![b'b'; 512]].concat();
        let expected = expected_sparse(&[(0, 512, b'a'), (4096, 512, b'b')], 8192);
        // 1.0: the map in the data, padded to a block.
        let mut map = b"2\n0\n512\n4096\n512\n".to_vec();
        map.resize(512, 0);
        let stored = [map, data.clone()].concat();
        let v10 = archive(&[
            member(
                header(EntryType::XHeader, b"pax", 0),
                &pax(&[
                    ("GNU.sparse.major", b"1"),
                    ("GNU.sparse.minor", b"0"),
                    ("GNU.sparse.name", b"real-name"),
                    ("GNU.sparse.realsize", b"8192"),
                ]),
            ),
            member(
                header(
                    EntryType::Regular,
                    b"GNUSparseFile.0/real-name",
                    stored.len() as u64,
                ),
                &stored,
            ),
        ]);
        // 0.1: the map in one record.
        let v01 = archive(&[
            member(
                header(EntryType::XHeader, b"pax", 0),
                &pax(&[
                    ("GNU.sparse.map", b"0,512,4096,512"),
                    ("GNU.sparse.name", b"real-name"),
                    ("GNU.sparse.size", b"8192"),
                ]),
            ),
            member(
                header(EntryType::Regular, b"GNUSparseFile.0/x", 1024),
                &data,
            ),
        ]);
        // 0.0: offset and length records in pairs.
        let v00 = archive(&[
            member(
                header(EntryType::XHeader, b"pax", 0),
                &pax(&[
                    ("GNU.sparse.size", b"8192"),
                    ("GNU.sparse.offset", b"0"),
                    ("GNU.sparse.numbytes", b"512"),
                    ("GNU.sparse.offset", b"4096"),
                    ("GNU.sparse.numbytes", b"512"),
                ]),
            ),
            member(header(EntryType::Regular, b"real-name", 1024), &data),
        ]);
        for bytes in [v10, v01, v00] {
            let mut tar = stream(&bytes);
            let entry = tar.next_entry().expect("read").expect("entry");
            assert_eq!(entry.path, b"real-name");
            assert_eq!(entry.size, 8192);
            assert_eq!(read_all(&mut tar), expected);
            assert!(tar.next_entry().expect("end").is_none());
        }
    }

    #[test]
    fn a_pax_1_0_map_announcing_too_many_regions_is_refused() {
        let mut map = b"99999999\n".to_vec();
        map.resize(512, 0);
        let bytes = archive(&[
            member(
                header(EntryType::XHeader, b"pax", 0),
                &pax(&[
                    ("GNU.sparse.major", b"1"),
                    ("GNU.sparse.minor", b"0"),
                    ("GNU.sparse.realsize", b"8192"),
                ]),
            ),
            member(header(EntryType::Regular, b"f", 512), &map),
        ]);
        assert!(matches!(
            limit(stream(&bytes).next_entry().expect_err("refused")),
            LimitError::SparseRegions { .. }
        ));
    }
}
