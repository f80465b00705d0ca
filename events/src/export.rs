//! The portable export file: everything an auditor needs, with this binary,
//! to re-verify the whole history. Byte layout in `events/FORMAT.md`:
//!
//! ```text
//! header   8 bytes "TLEXPORT", u32 LE format version (1)
//! records  per record: u32 LE length n, then n bytes exactly as stored
//! footer   u32 LE 0xFFFFFFFF (marker), u64 LE record count, 32-byte head
//!          hash, 32-byte blake3 checksum (derive-key mode, context
//!          FOOTER_CHECKSUM_CONTEXT) over header || marker || count || head hash
//! ```
//!
//! Owns the writer ([`write()`], [`write_all`]), the framing reader
//! ([`ExportReader`]) and the verifying reader ([`ExportRecords`],
//! [`verify`]). Every defect is an [`ExportError`] whose [`ExportError::seq`]
//! is the seq expected at the position where the file stops being right:
//! a damaged record (or its length prefix) names its own position; a missing,
//! swapped or duplicated record names the position where the chain breaks;
//! a truncated file names the record that is incomplete or missing; a
//! damaged, missing or contradicting footer names the seq after the last
//! good record. Must never: trust a length prefix beyond
//! [`RECORD_BYTES_MAX`], yield a record it has not verified, or call a file
//! complete before its footer checked out.

use crate::ids::Hash;
use crate::record::{self, ChainVerifier, Head, Record, RecordError};
use crate::store::{LogStore, RECORD_BYTES_MAX, StoreError};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The first 8 bytes of every export.
pub const MAGIC: &[u8; 8] = b"TLEXPORT";

/// The export format this module writes and reads.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// Magic plus version.
pub const FILE_HEADER_BYTES: usize = 12;

/// A length prefix with this value starts the footer (no record can be that long).
pub const FOOTER_MARKER: u32 = u32::MAX;

/// Marker, count, head hash, checksum.
pub const FOOTER_BYTES: usize = 4 + 8 + 32 + 32;

/// blake3 derive-key context of the footer checksum.
pub const FOOTER_CHECKSUM_CONTEXT: &str = "taskledger 2025 export v1 footer checksum";

/// Buffer size of export reads and writes.
pub const EXPORT_BUFFER_BYTES: usize = 1 << 20;

/// What is wrong with an export at a position.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ExportFault {
    #[error("not a taskledger export: bad magic")]
    BadMagic,
    #[error("export format version {found}, this binary reads {EXPORT_FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("file is truncated: {what}")]
    Truncated { what: &'static str },
    #[error(
        "length prefix {len} is outside {}..={}",
        record::HEADER_BYTES,
        RECORD_BYTES_MAX
    )]
    Length { len: u32 },
    #[error("record: {0}")]
    Record(RecordError),
    #[error("footer checksum does not match")]
    FooterChecksum,
    #[error("footer says {footer} records, the file holds {found}")]
    FooterCount { footer: u64, found: u64 },
    #[error("footer head hash {footer} is not the last record's hash {found}")]
    FooterHead { footer: String, found: String },
    #[error("bytes follow the footer")]
    Trailing,
}

/// Why an export could not be written or does not verify.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The file could not be opened, read or written at all.
    #[error("export I/O: {0}")]
    Io(#[from] io::Error),
    /// The store failed while exporting (its `Corrupt` names the seq).
    #[error("log store: {0}")]
    Store(#[from] StoreError),
    /// The file is wrong from `seq` on.
    #[error("export bad at seq {seq}: {fault}")]
    Bad { seq: u64, fault: ExportFault },
}

impl ExportError {
    /// The first bad seq: the seq expected where the file stops being right.
    /// `None` for I/O errors and non-corruption store errors.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ExportError::Bad { seq, .. } => Some(*seq),
            ExportError::Store(e) => e.corrupt_seq(),
            ExportError::Io(_) => None,
        }
    }

    /// The fault, for a file that is wrong.
    pub fn fault(&self) -> Option<&ExportFault> {
        match self {
            ExportError::Bad { fault, .. } => Some(fault),
            _ => None,
        }
    }

    fn bad(seq: u64, fault: ExportFault) -> Self {
        ExportError::Bad { seq, fault }
    }
}

/// The checked footer of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub records: u64,
    pub head_hash: Hash,
}

fn footer_checksum(header: &[u8; FILE_HEADER_BYTES], records: u64, head_hash: &Hash) -> Hash {
    let mut h = blake3::Hasher::new_derive_key(FOOTER_CHECKSUM_CONTEXT);
    h.update(header);
    h.update(&FOOTER_MARKER.to_le_bytes());
    h.update(&records.to_le_bytes());
    h.update(head_hash);
    *h.finalize().as_bytes()
}

fn file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0u8; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&EXPORT_FORMAT_VERSION.to_le_bytes());
    header
}

/// Stream the whole log, as of its head when the call starts, to `out`.
/// Every record is verified on the way (a damaged store is not exported:
/// the error names the first bad seq). Returns the exported head.
pub fn write<S: LogStore + ?Sized, W: Write>(store: &S, out: W) -> Result<Head, ExportError> {
    let mut out = BufWriter::with_capacity(EXPORT_BUFFER_BYTES, out);
    let header = file_header();
    out.write_all(&header)?;
    let head = store.head();
    let mut verifier = ChainVerifier::new();
    let mut failure: Option<ExportError> = None;
    store.scan(1, head.seq, &mut |seq, bytes| {
        let step = verifier
            .next(bytes)
            .map_err(|e| ExportError::Store(StoreError::corrupt(seq, e.to_string())))
            .and_then(|_| {
                // RECORD_BYTES_MAX < u32::MAX, and the verifier accepted the
                // record, so its length fits below the footer marker.
                let len = u32::try_from(bytes.len())
                    .ok()
                    .filter(|len| *len != FOOTER_MARKER)
                    .ok_or_else(|| {
                        ExportError::Store(StoreError::corrupt(seq, "record too long to export"))
                    })?;
                out.write_all(&len.to_le_bytes())?;
                out.write_all(bytes)?;
                Ok(())
            });
        match step {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if verifier.head() != head {
        return Err(ExportError::Store(StoreError::corrupt(
            verifier.head().seq + 1,
            "the log ended before its head",
        )));
    }
    out.write_all(&FOOTER_MARKER.to_le_bytes())?;
    out.write_all(&head.seq.to_le_bytes())?;
    out.write_all(&head.hash)?;
    out.write_all(&footer_checksum(&header, head.seq, &head.hash))?;
    out.flush()?;
    Ok(head)
}

/// Export the log to `path`: written to `<path>.partial`, synced, then
/// renamed, so `path` only ever holds a complete export.
pub fn write_all<S: LogStore + ?Sized>(
    store: &S,
    path: impl AsRef<Path>,
) -> Result<Head, ExportError> {
    let path = path.as_ref();
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial)?;
    let head = write(store, &file)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(head)
}

/// Read `buf.len()` bytes unless the input ends first; returns how many.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The framing reader: checks the header, each length prefix (bounded by
/// [`RECORD_BYTES_MAX`]), truncation and the footer (checksum, record count,
/// head hash against the last record's stored hash). It does not verify the
/// chain: use [`ExportRecords`] for that. Reuses one buffer.
pub struct ExportReader<R> {
    input: R,
    header: [u8; FILE_HEADER_BYTES],
    buf: Vec<u8>,
    records_read: u64,
    last_hash: Hash,
    footer: Option<Footer>,
}

impl ExportReader<BufReader<File>> {
    /// Open an export file (buffered) and check its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ExportError> {
        let file = File::open(path)?;
        ExportReader::new(BufReader::with_capacity(EXPORT_BUFFER_BYTES, file))
    }
}

impl<R: Read> ExportReader<R> {
    /// Read from `input` (give it a buffered reader) and check the header.
    pub fn new(mut input: R) -> Result<Self, ExportError> {
        let mut header = [0u8; FILE_HEADER_BYTES];
        if read_full(&mut input, &mut header)? < FILE_HEADER_BYTES {
            return Err(ExportError::bad(
                1,
                ExportFault::Truncated {
                    what: "file header",
                },
            ));
        }
        if &header[..8] != MAGIC {
            return Err(ExportError::bad(1, ExportFault::BadMagic));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&header[8..]);
        let found = u32::from_le_bytes(version);
        if found != EXPORT_FORMAT_VERSION {
            return Err(ExportError::bad(1, ExportFault::Version { found }));
        }
        Ok(ExportReader {
            input,
            header,
            buf: Vec::new(),
            records_read: 0,
            last_hash: record::GENESIS_PREV,
            footer: None,
        })
    }

    /// The seq expected at the current position (1 + records read).
    pub fn next_seq(&self) -> u64 {
        self.records_read + 1
    }

    /// The footer, once reached and checked.
    pub fn footer(&self) -> Option<Footer> {
        self.footer
    }

    /// The next record's bytes (framing checked, chain not), or `None` once
    /// the footer has been read and checked out. After an error the reader
    /// is in an unspecified position: stop.
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>, ExportError> {
        if self.footer.is_some() {
            return Ok(None);
        }
        let seq = self.next_seq();
        let mut prefix = [0u8; 4];
        match read_full(&mut self.input, &mut prefix)? {
            0 => {
                return Err(ExportError::bad(
                    seq,
                    ExportFault::Truncated {
                        what: "record or footer missing",
                    },
                ));
            }
            4 => {}
            _ => {
                return Err(ExportError::bad(
                    seq,
                    ExportFault::Truncated {
                        what: "length prefix",
                    },
                ));
            }
        }
        let len = u32::from_le_bytes(prefix);
        if len == FOOTER_MARKER {
            self.read_footer()?;
            return Ok(None);
        }
        let size = len as usize;
        if !(record::HEADER_BYTES..=RECORD_BYTES_MAX).contains(&size) {
            return Err(ExportError::bad(seq, ExportFault::Length { len }));
        }
        if self.buf.len() < size {
            self.buf.resize(size, 0);
        }
        let bytes = &mut self.buf[..size];
        if read_full(&mut self.input, bytes)? < size {
            return Err(ExportError::bad(
                seq,
                ExportFault::Truncated { what: "record" },
            ));
        }
        // size >= record::HEADER_BYTES, so the hash field is in range.
        self.last_hash.copy_from_slice(&bytes[48..80]);
        self.records_read = seq;
        Ok(Some(bytes))
    }

    fn read_footer(&mut self) -> Result<(), ExportError> {
        let seq = self.next_seq();
        let mut rest = [0u8; FOOTER_BYTES - 4];
        if read_full(&mut self.input, &mut rest)? < rest.len() {
            return Err(ExportError::bad(
                seq,
                ExportFault::Truncated { what: "footer" },
            ));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&rest[..8]);
        let records = u64::from_le_bytes(count);
        let mut head_hash = [0u8; 32];
        head_hash.copy_from_slice(&rest[8..40]);
        if rest[40..] != footer_checksum(&self.header, records, &head_hash) {
            return Err(ExportError::bad(seq, ExportFault::FooterChecksum));
        }
        if records != self.records_read {
            return Err(ExportError::bad(
                seq,
                ExportFault::FooterCount {
                    footer: records,
                    found: self.records_read,
                },
            ));
        }
        if head_hash != self.last_hash {
            return Err(ExportError::bad(
                seq,
                ExportFault::FooterHead {
                    footer: record::hex(&head_hash),
                    found: record::hex(&self.last_hash),
                },
            ));
        }
        let mut probe = [0u8; 1];
        if read_full(&mut self.input, &mut probe)? != 0 {
            return Err(ExportError::bad(seq, ExportFault::Trailing));
        }
        self.footer = Some(Footer { records, head_hash });
        Ok(())
    }
}

/// The verifying reader: yields each record, chain-verified and decoded, in
/// order; then `None` only if the footer checked out. The first error is
/// yielded once and ends the iteration. An audit must run it to the end and
/// treat any `Err` as a failed audit; records yielded before an error are
/// genuine up to the error's seq minus one.
pub struct ExportRecords<R> {
    reader: ExportReader<R>,
    verifier: ChainVerifier,
    done: bool,
}

impl<R: Read> ExportRecords<R> {
    pub fn new(reader: ExportReader<R>) -> Self {
        ExportRecords {
            reader,
            verifier: ChainVerifier::new(),
            done: false,
        }
    }

    /// The head verified so far (the file's head once iteration ended
    /// without error).
    pub fn head(&self) -> Head {
        self.verifier.head()
    }

    /// True once the footer has been read and checked.
    pub fn is_complete(&self) -> bool {
        self.reader.footer().is_some()
    }

    /// The next record's stored bytes, framed and chain-verified (seq,
    /// link, hash, time) but not decoded, or `None` once the footer checked
    /// out. For a caller that decodes elsewhere: it must decode every record
    /// and report a failure as [`ExportFault::Record`] at that seq, as the
    /// iterator does. After the first error this yields `None`.
    pub fn next_verified_bytes(&mut self) -> Result<Option<&[u8]>, ExportError> {
        if self.done {
            return Ok(None);
        }
        let seq = self.reader.next_seq();
        let step = match self.reader.next_raw() {
            Ok(Some(bytes)) => match self.verifier.verify(bytes) {
                Ok(_) => Ok(Some(bytes)),
                Err(e) => Err(ExportError::bad(seq, ExportFault::Record(e))),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        if !matches!(step, Ok(Some(_))) {
            self.done = true;
        }
        step
    }

    fn step(&mut self) -> Result<Option<Record>, ExportError> {
        let seq = self.reader.next_seq();
        match self.reader.next_raw()? {
            Some(bytes) => self
                .verifier
                .next(bytes)
                .map(Some)
                .map_err(|e| ExportError::bad(seq, ExportFault::Record(e))),
            None => Ok(None),
        }
    }
}

impl<R: Read> Iterator for ExportRecords<R> {
    type Item = Result<Record, ExportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Open an export for record-by-record verification (see [`ExportRecords`]).
pub fn records(path: impl AsRef<Path>) -> Result<ExportRecords<BufReader<File>>, ExportError> {
    Ok(ExportRecords::new(ExportReader::open(path)?))
}

/// Verify a whole export: framing, chain, every event decodes, footer.
/// Returns its head.
pub fn verify(path: impl AsRef<Path>) -> Result<Head, ExportError> {
    verify_reader(ExportReader::open(path)?)
}

/// [`verify`] over any reader.
pub fn verify_reader<R: Read>(reader: ExportReader<R>) -> Result<Head, ExportError> {
    let mut records = ExportRecords::new(reader);
    for record in records.by_ref() {
        record?;
    }
    Ok(records.head())
}
