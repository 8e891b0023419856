//! Fuzzes the journal's index checkpoint decoder (the base file and the links of its chain,
//! read at open): arbitrary bytes must be refused with a reason or give a checkpoint, never
//! panic.
//!
//! Input: a flags byte, then parts, each after a two-byte length. With flag bit 1 the first
//! part is the base; otherwise the base is `fixtures/index.checkpoint` (a real one, 70 KB: far
//! longer than fuzz inputs) and the parts are up to three links of its chain. Each part gets
//! its file's magic (unless its first byte is odd) and a correct trailing CRC32C, so that the
//! fuzzer reaches the parsers behind the checksum. Flag bit 0 picks the hash mask (all bits,
//! or none as in the collision tests). The corpus holds the fixture's two real links.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_journal::checkpoint::decode_files;

const BASE: &[u8] = include_bytes!("../fixtures/index.checkpoint");

fn part<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    if data.len() < 2 {
        return None;
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let (p, rest) = data[2..].split_at(n);
    *data = rest;
    Some(p)
}

fn file(p: &[u8], magic: &[u8; 8]) -> Vec<u8> {
    let mut b = p.to_vec();
    if b.len() < 12 {
        return b;
    }
    if b[0] % 2 == 0 {
        b[..8].copy_from_slice(magic);
    }
    let end = b.len() - 4;
    let crc = crc32c::crc32c(&b[..end]);
    b[end..].copy_from_slice(&crc.to_le_bytes());
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut data)) = data.split_first() else {
        return;
    };
    let mask = if flags & 1 == 0 { !0 } else { 0 };
    let base = if flags & 2 != 0 {
        let Some(p) = part(&mut data) else { return };
        file(p, b"UCJCKPT1")
    } else {
        BASE.to_vec()
    };
    let mut links = Vec::new();
    while links.len() < 3 {
        let Some(p) = part(&mut data) else { break };
        links.push(file(p, b"UCJCKLN1"));
    }
    let links: Vec<&[u8]> = links.iter().map(Vec::as_slice).collect();
    if let Ok((events, applied)) = decode_files(&base, &links, mask) {
        assert!(applied as usize <= links.len());
        assert!(events >= 15 || flags & 2 != 0);
    }
});
