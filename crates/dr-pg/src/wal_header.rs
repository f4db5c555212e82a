//! The long page header at the start of every WAL segment (`XLogLongPageHeaderData`,
//! PostgreSQL `access/xlog_internal.h`): which cluster wrote the segment (system identifier),
//! which major (the page magic changes with every WAL format change), its segment and block
//! size. `dr wal push` reads it to find the target a segment belongs to and to refuse WAL of
//! another cluster, as pgBackRest's `pgWalFromBuffer` does.
//!
//! Layout (little-endian on every platform PostgreSQL dr supports runs on):
//!
//! ```text
//!  0 u16 xlp_magic      XLOG_PAGE_MAGIC of the major
//!  2 u16 xlp_info       XLP_LONG_HEADER (0x0002) on a segment's first page
//!  4 u32 xlp_tli
//!  8 u64 xlp_pageaddr   the LSN of this page
//! 16 u32 xlp_rem_len
//! 20 (padding)
//! 24 u64 xlp_sysid
//! 32 u32 xlp_seg_size
//! 36 u32 xlp_xlog_blcksz
//! ```

/// Bytes of the long page header dr reads.
pub const WAL_LONG_HEADER_BYTES: usize = 40;

/// `XLP_LONG_HEADER`: set in `xlp_info` on the first page of a segment only.
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` per major, each read from a segment written by that server (the
/// fixtures in the tests below). A major not listed is refused by name, so a new major is
/// one line here plus its fixture.
const MAGICS: [(u16, u32); 4] = [(0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)];

/// What the first page of a WAL segment says about the cluster that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// `xlp_magic`
    pub magic: u16,
    /// The PostgreSQL major the magic belongs to.
    pub major: u32,
    /// `xlp_tli`
    pub timeline: u32,
    /// `xlp_pageaddr`: the LSN the segment starts at.
    pub page_address: u64,
    /// `xlp_sysid`: as `pg_controldata` prints it ("Database system identifier").
    pub system_identifier: u64,
    /// `xlp_seg_size`: `wal_segment_size` in bytes.
    pub segment_size: u32,
    /// `xlp_xlog_blcksz`: the WAL page size (8192 unless built otherwise).
    pub block_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalHeaderError {
    #[error("not a WAL segment: {len} bytes, shorter than a WAL page header ({WAL_LONG_HEADER_BYTES} bytes)")]
    Short { len: usize },
    #[error("not a WAL segment of a PostgreSQL major dr knows: page magic {magic:#06X} (known: {known})")]
    Magic { magic: u16, known: String },
    #[error("not the first page of a WAL segment: xlp_info {info:#06X} has no long header flag (0x0002)")]
    NotLong { info: u16 },
}

impl WalHeaderError {
    /// The next step for the operator.
    pub fn hint(&self) -> &'static str {
        match self {
            WalHeaderError::Short { .. } | WalHeaderError::NotLong { .. } => {
                "pass a WAL segment as PostgreSQL wrote it (archive_command's %p); \
                 a truncated or zero-filled file is not one"
            }
            WalHeaderError::Magic { .. } => {
                "a newer PostgreSQL than this dr knows wrote it (upgrade dr), \
                 or the file is not a WAL segment"
            }
        }
    }
}

impl WalHeader {
    /// Parse the long page header from the first bytes of a segment (at least
    /// [`WAL_LONG_HEADER_BYTES`]).
    pub fn parse(bytes: &[u8]) -> Result<WalHeader, WalHeaderError> {
        let Some(page) = bytes.get(..WAL_LONG_HEADER_BYTES) else {
            return Err(WalHeaderError::Short { len: bytes.len() });
        };
        let u16_at = |at: usize| u16::from_le_bytes([page[at], page[at + 1]]);
        let u32_at =
            |at: usize| u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let magic = u16_at(0);
        let Some(&(_, major)) = MAGICS.iter().find(|(m, _)| *m == magic) else {
            let known = MAGICS
                .iter()
                .map(|(m, major)| format!("{m:#06X} = {major}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(WalHeaderError::Magic { magic, known });
        };
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return Err(WalHeaderError::NotLong { info });
        }
        Ok(WalHeader {
            magic,
            major,
            timeline: u32_at(4),
            page_address: u64_at(8),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        })
    }
}

impl WalHeader {
    /// Whether `page` (at least the 16 bytes of a short page header) is the page this
    /// segment holds at byte `offset`: the same magic, and its own address.
    pub fn holds_page(&self, page: &[u8], offset: u64) -> bool {
        let Some(h) = page.get(..16) else {
            return false;
        };
        let magic = u16::from_le_bytes([h[0], h[1]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&h[8..16]);
        magic == self.magic && u64::from_le_bytes(addr) == self.page_address + offset
    }

    /// The end of the valid WAL in the segment file at `path` while it is being written (a
    /// `.partial` of pg_receivewal, which zero-fills a new file): the address of the first
    /// page that is not this segment's, or the segment's end. The last valid page may be
    /// written only in part; recovery stops at its last whole record.
    pub fn written_end(&self, path: &std::path::Path) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path)?;
        let block = u64::from(self.block_size.max(512));
        let size = u64::from(self.segment_size);
        let mut page = [0u8; 16];
        let mut offset = 0;
        while offset < size {
            let read = file.read_at(&mut page, offset)?;
            if read < page.len() || !self.holds_page(&page, offset) {
                break;
            }
            offset += block;
        }
        Ok(self.page_address + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The first 40 bytes of `pg_wal/000000010000000000000001` right after `initdb` of each
    /// major, with the system identifier `pg_controldata` printed for that cluster.
    const FIXTURES: [(u32, &str, u64); 4] = [
        (
            15,
            "10d1020001000000000000010000000000000000000000000f40ff30cf20126b0000000100200000",
            7_715_265_185_891_434_511,
        ),
        (
            16,
            "13d10200010000000000000100000000000000000000000027509097cf20126b0000000100200000",
            7_715_265_187_612_217_383,
        ),
        (
            17,
            "16d1020001000000000000010000000000000000000000003f701f04d020126b0000000100200000",
            7_715_265_189_433_536_575,
        ),
        (
            18,
            "18d1020001000000000000010000000000000000000000005790556ed020126b0000000100200000",
            7_715_265_191_215_468_631,
        ),
    ];

    #[test]
    fn headers_of_real_segments_name_their_major_and_cluster() {
        for (major, hex, sysid) in FIXTURES {
            let h = WalHeader::parse(&bytes(hex)).expect("a real header");
            assert_eq!(h.major, major);
            assert_eq!(h.system_identifier, sysid, "PostgreSQL {major}");
            assert_eq!(h.segment_size, 16 << 20);
            assert_eq!(h.block_size, 8192);
            assert_eq!(h.timeline, 1);
            assert_eq!(h.page_address, 0x0100_0000, "segment 1 starts at 0/1000000");
        }
    }

    #[test]
    fn a_one_mib_segment_with_a_continued_record_is_read() {
        // PostgreSQL 17, `initdb --wal-segsize=1`, 000000010000000000000006: xlp_info 0x0007
        // (a record continues from the previous segment; other flags beside the long one).
        let hex =
            "16d1070001000000000060000000000021020000000000006941db8dd820126b0000100000200000";
        let h = WalHeader::parse(&bytes(hex)).expect("a real header");
        assert_eq!(h.major, 17);
        assert_eq!(h.system_identifier, 7_715_265_226_104_062_313);
        assert_eq!(h.segment_size, 1 << 20);
        assert_eq!(h.page_address, 0x0060_0000);
    }

    #[test]
    fn a_longer_buffer_is_read_from_its_start() {
        let mut page = bytes(FIXTURES[2].1);
        page.resize(8192, 0);
        assert_eq!(WalHeader::parse(&page).expect("valid").major, 17);
    }

    #[test]
    fn what_is_not_a_segment_is_refused_with_a_hint() {
        let e = WalHeader::parse(&[0x16, 0xd1, 2, 0]).expect_err("short");
        assert_eq!(e, WalHeaderError::Short { len: 4 });
        assert!(e.hint().contains("%p"));

        let mut unknown = bytes(FIXTURES[0].1);
        unknown[0] = 0x99;
        let e = WalHeader::parse(&unknown).expect_err("unknown magic");
        assert!(e.to_string().contains("0xD199"), "{e}");
        assert!(e.to_string().contains("0xD116 = 17"), "{e}");
        assert!(e.hint().contains("upgrade dr"));

        let e = WalHeader::parse(&[0u8; 64]).expect_err("zeros");
        assert!(e.to_string().contains("0x0000"), "{e}");

        let mut short_header = bytes(FIXTURES[1].1);
        short_header[2] = 0x01; // a page in the middle of a segment
        let e = WalHeader::parse(&short_header).expect_err("not the first page");
        assert_eq!(e, WalHeaderError::NotLong { info: 1 });
    }
    #[test]
    fn the_written_end_is_the_first_page_that_is_not_the_segments() {
        let h = WalHeader::parse(&bytes(FIXTURES[2].1)).expect("valid");
        let page = |addr: u64| {
            let mut p = vec![0u8; 8192];
            p[..2].copy_from_slice(&h.magic.to_le_bytes());
            p[2] = 0x05;
            p[8..16].copy_from_slice(&addr.to_le_bytes());
            p
        };
        let mut file = bytes(FIXTURES[2].1);
        file.resize(8192, 0);
        file.extend(page(h.page_address + 8192));
        file.extend(page(h.page_address + 2 * 8192));
        // A stale page from elsewhere, then zeros to the segment's size.
        file.extend(page(h.page_address + 99 * 8192));
        file.resize(16 << 20, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("000000010000000000000001.partial");
        std::fs::write(&path, &file).expect("write");
        assert_eq!(
            h.written_end(&path).expect("read"),
            h.page_address + 3 * 8192
        );
        assert!(!h.holds_page(&[0u8; 16], 0));
        assert!(
            !h.holds_page(&page(h.page_address), 8192),
            "its own address only"
        );

        // Every page written: the segment's end.
        let whole: Vec<u8> = (0..2048u64)
            .flat_map(|i| page(h.page_address + i * 8192))
            .collect();
        std::fs::write(&path, &whole).expect("write");
        assert_eq!(
            h.written_end(&path).expect("read"),
            h.page_address + (16 << 20)
        );
    }
}
