//! Shifting a CRC-32C register past a run of zero bytes in O(log n) multiplications
//! modulo the polynomial, for the in-place restamp of a sealed batch
//! ([`super::batch`]). The `crc32c` crate's `crc32c_combine` does the same job with zlib's
//! older method (32 × 32 GF(2) matrix squarings per bit of the length, ~12 µs for a
//! 256 KiB batch, 2.7 % of the producer thread at 1 KiB records in PERF.md); this is
//! zlib's newer one (`multmodp`/`x2nmodp`, zlib 1.2.12), well under a microsecond.

/// CRC-32C's polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// `a · b mod P` over GF(2), both bit-reflected (bit 31 holds x^0).
const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        if m == 0 {
            return p;
        }
    }
}

/// `X2N[k]` = x^(2^k) mod P, for every k a `u64` byte count needs (3 + 64). CRC-32C's
/// polynomial is not irreducible, so unlike zlib's CRC-32 table this one does not wrap
/// around at 32: x^(2^32) is not x modulo this polynomial (the tests check 2^31 bytes).
const X2N: [u32; 67] = {
    let mut t = [0u32; 67];
    let mut p: u32 = 1 << 30; // x^1
    let mut k = 0;
    while k < 67 {
        t[k] = p;
        p = mul_mod(p, p);
        k += 1;
    }
    t
};

/// x^(8·n) mod P: the operator that moves a CRC register past `n` zero bytes.
fn zero_bytes_operator(n: usize) -> u32 {
    let mut p: u32 = 1 << 31; // x^0
    let mut n = n as u64;
    let mut k = 3; // 8 = 2^3
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod(X2N[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The CRC register `crc` moved past `n` zero bytes: what `crc32c_combine(crc, 0, n)`
/// returns (used on the XOR of two CRCs of equal-length messages, where the initial
/// value and final XOR cancel).
pub(crate) fn shift_past_zeros(crc: u32, n: usize) -> u32 {
    if n == 0 {
        return crc;
    }
    mul_mod(zero_bytes_operator(n), crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_crc32c_combine_at_the_edges() {
        for n in [0, 1, 2, 3, 7, 8, 63, 64, 65, 4095, 4096, 262_144, 262_107, 1 << 24, (1 << 31) + 5] {
            for crc in [0, 1, 0xFFFF_FFFF, 0x8000_0000, 0xDEAD_BEEF] {
                assert_eq!(shift_past_zeros(crc, n), crc32c::crc32c_combine(crc, 0, n), "crc {crc:#x}, n {n}");
            }
        }
    }

    proptest! {
        #[test]
        fn matches_crc32c_combine(crc in any::<u32>(), n in 0usize..(64 << 20)) {
            prop_assert_eq!(shift_past_zeros(crc, n), crc32c::crc32c_combine(crc, 0, n));
        }
    }
}
