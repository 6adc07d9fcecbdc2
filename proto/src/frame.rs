//! The end of a chunk stream on the wire.
//!
//! A chunk travels down a pipeline as its bytes followed by a 12-byte footer: its length (u64 LE)
//! and CRC32C (u32 LE). A member keeps a chunk only if the stream ends with a footer that matches
//! what it received, so a stream cut short anywhere — a dropped sender, a cancelled handler, a
//! proxy that closes cleanly — can never be mistaken for a complete chunk.

use bytes::{Bytes, BytesMut};

/// Length of the footer that ends every chunk stream.
pub const FOOTER_LEN: usize = 12;

/// The footer for a chunk of `len` bytes with CRC32C `crc`.
pub fn footer(len: u64, crc: u32) -> Bytes {
    let mut f = Vec::with_capacity(FOOTER_LEN);
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(f)
}

/// Splits an incoming chunk stream into data and its footer, holding back the last
/// [`FOOTER_LEN`] bytes seen until the stream ends. Large frames pass through without copying.
#[derive(Default)]
pub struct FooterSplitter {
    tail: BytesMut,
}

impl FooterSplitter {
    /// Takes a frame; returns the bytes now known to be data (at most two pieces).
    pub fn push(&mut self, frame: Bytes) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(2);
        if frame.len() >= FOOTER_LEN {
            if !self.tail.is_empty() {
                out.push(self.tail.split().freeze());
            }
            let cut = frame.len() - FOOTER_LEN;
            if cut > 0 {
                out.push(frame.slice(..cut));
            }
            self.tail.extend_from_slice(&frame[cut..]);
        } else {
            self.tail.extend_from_slice(&frame);
            if self.tail.len() > FOOTER_LEN {
                let excess = self.tail.len() - FOOTER_LEN;
                out.push(self.tail.split_to(excess).freeze());
            }
        }
        out
    }

    /// The (length, CRC32C) the footer announces, if the stream ended with one.
    pub fn finish(self) -> Option<(u64, u32)> {
        if self.tail.len() != FOOTER_LEN {
            return None;
        }
        let t = &self.tail;
        let len = u64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
        let crc = u32::from_le_bytes([t[8], t[9], t[10], t[11]]);
        Some((len, crc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_data_from_the_footer_at_any_fragmentation() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut wire = data.clone();
        wire.extend_from_slice(&footer(100, 7));
        for step in [1, 5, 11, 12, 13, 50, 112] {
            let mut s = FooterSplitter::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                for b in s.push(Bytes::copy_from_slice(piece)) {
                    got.extend_from_slice(&b);
                }
            }
            assert_eq!(got, data, "step {step}");
            assert_eq!(s.finish(), Some((100, 7)));
        }
        // A stream cut short has no footer.
        let mut s = FooterSplitter::default();
        s.push(Bytes::from_static(b"short"));
        assert_eq!(s.finish(), None);
    }
}
