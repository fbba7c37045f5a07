//! Fuzzes the SD-card image's partition table reader (`cargo cross image`): the MBR and GPT
//! parsing that picks the boot partition candidates, over arbitrary bytes.
//!
//! Input layout: `[image length in sectors, u32 LE] [the image's first bytes...]`. The image is
//! the bytes given, then zeros up to its length (at least the bytes given), so a multi-GiB card
//! costs nothing and the fuzzer picks where it ends.
//!
//! Besides "no panic" (sector numbers come from the file: no arithmetic may overflow), for every
//! table it accepts: at least one candidate, numbered uniquely, each non-empty, after the
//! partition table (sector 1 for MBR, LBA 34 for GPT), ending inside the image; a refusal names
//! the image.
#![no_main]

use std::io::{self, Read, Seek, SeekFrom};

use bramble_cross::image::{self, Candidate, GPT_FIRST_USABLE_LBA, ReadOnly};
use libfuzzer_sys::fuzz_target;

const SECTOR: u64 = 512;

/// `data` followed by zeros up to `len` bytes.
#[derive(Debug)]
struct Image<'a> {
    data: &'a [u8],
    len: u64,
    pos: u64,
}

impl Read for Image<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = usize::try_from(self.pos + i as u64)
                .ok()
                .and_then(|at| self.data.get(at))
                .copied()
                .unwrap_or(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Image<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((len, data)) = input.split_first_chunk::<4>() else {
        return;
    };
    let len = (u64::from(u32::from_le_bytes(*len)) * SECTOR).max(data.len() as u64);
    let dev = ReadOnly(Image { data, len, pos: 0 });
    match image::partition_table(dev, len, "fuzz.img") {
        Ok((table, candidates)) => {
            let first = match table {
                "MBR" => SECTOR,
                "GPT" => GPT_FIRST_USABLE_LBA * SECTOR,
                other => panic!("unknown table {other}"),
            };
            assert!(
                !candidates.is_empty(),
                "accepted a {table} without candidates"
            );
            let mut numbers: Vec<u32> = candidates.iter().map(|c| c.number).collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), candidates.len(), "{candidates:?}");
            for &Candidate {
                number,
                offset,
                len: part,
            } in &candidates
            {
                assert!(part > 0, "{table} partition {number} is empty");
                assert!(
                    offset >= first,
                    "{table} partition {number} at {offset} overlaps the table"
                );
                let end = offset.checked_add(part);
                assert!(
                    end.is_some_and(|e| e <= len),
                    "{table} partition {number} ({offset}+{part}) ends past the image's {len} bytes"
                );
            }
        }
        Err(e) => {
            let e = format!("{e:#}");
            assert!(
                e.contains("fuzz.img"),
                "an error that does not name the image: {e}"
            );
        }
    }
});
