//! LEB128 varints (signed ones zigzag-encoded) and length-prefixed bytes: the primitive forms
//! of the hand-encoded parts of snapshots (see `ledger::snapshot`). Every read is
//! bounds-checked and fails with [`Malformed`], never a panic.

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed: {}", self.0)
    }
}

/// Appends the body's primitive forms.
#[derive(Debug, Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn var(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.0.push((x as u8) | 0x80);
            x >>= 7;
        }
        self.0.push(x as u8);
    }
    pub(crate) fn zig(&mut self, x: i64) {
        self.var(((x << 1) ^ (x >> 63)) as u64);
    }
    pub(crate) fn zig128(&mut self, x: i128) {
        let mut z = ((x << 1) ^ (x >> 127)) as u128;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }
    /// Length-prefixed bytes.
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked and fails with a typed error.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        let x = *self.b.get(self.at).ok_or(Malformed("truncated"))?;
        self.at += 1;
        Ok(x)
    }
    pub(crate) fn var(&mut self) -> Result<u64, Malformed> {
        // Fast path: one byte (small counts, deltas, flags).
        if let Some(&b) = self.b.get(self.at) {
            if b < 0x80 {
                self.at += 1;
                return Ok(u64::from(b));
            }
        }
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(Malformed("varint too long"))
    }
    pub(crate) fn zig(&mut self) -> Result<i64, Malformed> {
        let z = self.var()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }
    pub(crate) fn zig128(&mut self) -> Result<i128, Malformed> {
        let mut z = 0u128;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            z |= u128::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(((z >> 1) as i128) ^ -((z & 1) as i128));
            }
        }
        Err(Malformed("varint too long"))
    }
    pub(crate) fn u64_le(&mut self) -> Result<u64, Malformed> {
        let end = self.at.checked_add(8).ok_or(Malformed("truncated"))?;
        let w = self.b.get(self.at..end).ok_or(Malformed("truncated"))?;
        self.at = end;
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = usize::try_from(self.var()?).map_err(|_| Malformed("length"))?;
        let end = self.at.checked_add(n).ok_or(Malformed("truncated"))?;
        let b = self.b.get(self.at..end).ok_or(Malformed("truncated"))?;
        self.at = end;
        Ok(b)
    }
    /// A count of items that take at least `min_bytes` each: refused if the rest of the input
    /// cannot hold that many (so a damaged count cannot make us reserve huge amounts).
    pub(crate) fn len_hint(&mut self, min_bytes: usize) -> Result<usize, Malformed> {
        let n = usize::try_from(self.var()?).map_err(|_| Malformed("count"))?;
        let left = self.b.len() - self.at;
        if n.saturating_mul(min_bytes) > left {
            return Err(Malformed("count larger than the input"));
        }
        Ok(n)
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.at == self.b.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_value_round_trips(a in any::<u64>(), b in any::<i64>(), c in any::<i128>(), bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut w = Writer(Vec::new());
            w.var(a);
            w.zig(b);
            w.zig128(c);
            w.bytes(&bytes);
            let mut r = Reader::new(&w.0);
            prop_assert_eq!(r.var(), Ok(a));
            prop_assert_eq!(r.zig(), Ok(b));
            prop_assert_eq!(r.zig128(), Ok(c));
            prop_assert_eq!(r.bytes(), Ok(&bytes[..]));
            prop_assert!(r.is_done());
            // Every strict prefix fails to decode the same sequence, without panicking.
            for cut in 0..w.0.len() {
                let mut r = Reader::new(&w.0[..cut]);
                let all = r.var().and_then(|_| r.zig()).and_then(|_| r.zig128()).and_then(|_| r.bytes());
                prop_assert!(all.is_err(), "prefix of {} bytes decoded", cut);
            }
        }
    }

    #[test]
    fn overlong_and_oversized_inputs_are_refused() {
        assert_eq!(
            Reader::new(&[0xff; 11]).var(),
            Err(Malformed("varint too long"))
        );
        assert_eq!(
            Reader::new(&[0xff; 20]).zig128(),
            Err(Malformed("varint too long"))
        );
        // A count of 100 items of at least 4 bytes in 3 remaining bytes.
        assert!(Reader::new(&[100, 0, 0, 0]).len_hint(4).is_err());
        assert_eq!(Reader::new(&[1, 0, 0, 0, 0]).len_hint(4), Ok(1));
        assert_eq!(Reader::new(&[5, 1, 2]).bytes(), Err(Malformed("truncated")));
    }
}
