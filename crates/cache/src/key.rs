//! Cache keys: everything that can change a result, hashed to 128 bits.
//!
//! A key covers the normalized statement (comments and white space gone,
//! literals kept), how it was sent (simple query, or extended protocol with
//! or without a portal Describe), the parameter values and formats, the
//! result formats, the user, the database and the session settings that
//! change results. Two lanes of FNV-1a-style mixing, so keys are the same in
//! every pgpilot process (instances sharing Redis agree on them).

/// A result's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// How the statement reached pgpilot: part of the key because the cached
/// bytes differ (a simple query's response has no BindComplete, an
/// extended one has RowDescription only after a portal Describe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended { described: bool },
}

/// Builds a [`CacheKey`] from its parts, each length-prefixed so that
/// different splits of the same bytes never collide.
pub struct KeyBuilder {
    a: u64,
    b: u64,
}

impl Default for KeyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyBuilder {
    pub fn new() -> KeyBuilder {
        KeyBuilder {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x6c62_272e_07bb_0142,
        }
    }

    #[inline]
    fn byte(&mut self, x: u8) {
        self.a = (self.a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        self.b = (self.b ^ u64::from(x))
            .wrapping_mul(0x0000_0100_0000_0233)
            .rotate_left(5);
    }

    #[inline]
    fn word(&mut self, w: u64) {
        self.a = (self.a ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        self.b = (self.b ^ w.rotate_left(32))
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            .rotate_left(31);
    }

    /// Adds one part (eight bytes at a time: keys are built on every
    /// cacheable query).
    pub fn part(&mut self, bytes: &[u8]) -> &mut KeyBuilder {
        self.word(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        for &x in chunks.remainder() {
            self.byte(x);
        }
        self
    }

    /// Adds a 128-bit part (a statement's normalized hash).
    pub fn u128(&mut self, v: u128) -> &mut KeyBuilder {
        self.part(&v.to_le_bytes())
    }

    pub fn protocol(&mut self, p: Protocol) -> &mut KeyBuilder {
        let tag: &[u8] = match p {
            Protocol::Simple => b"Q",
            Protocol::Extended { described: false } => b"E",
            Protocol::Extended { described: true } => b"ED",
        };
        self.part(tag)
    }

    pub fn finish(&self) -> CacheKey {
        // A final avalanche so that similar inputs spread over the whole key.
        let mix = |mut x: u64| {
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            x ^ (x >> 33)
        };
        CacheKey((u128::from(mix(self.a)) << 64) | u128::from(mix(self.b ^ self.a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&[u8]]) -> CacheKey {
        let mut k = KeyBuilder::new();
        for p in parts {
            k.part(p);
        }
        k.finish()
    }

    #[test]
    fn parts_are_delimited() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_ne!(key(&[b"", b"x"]), key(&[b"x", b""]));
        assert_eq!(key(&[b"a", b"b"]), key(&[b"a", b"b"]));
    }

    #[test]
    fn protocol_matters() {
        let a = KeyBuilder::new().protocol(Protocol::Simple).finish();
        let b = KeyBuilder::new()
            .protocol(Protocol::Extended { described: true })
            .finish();
        let c = KeyBuilder::new()
            .protocol(Protocol::Extended { described: false })
            .finish();
        assert!(a != b && b != c && a != c);
    }
}
