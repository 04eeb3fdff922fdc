//! Builds small BTF blobs for tests (no kernel needed): the same encoding the kernel writes.
use super::kind;

#[derive(Default)]
pub struct Builder {
    strings: Vec<u8>,
    types: Vec<u8>,
    next: u32,
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            strings: vec![0],
            types: Vec::new(),
            next: 1,
        }
    }

    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    fn head(&mut self, name: &str, k: u8, vlen: u32, kind_flag: bool, x: u32) -> u32 {
        let n = self.s(name);
        let info = (u32::from(kind_flag) << 31) | (u32::from(k) << 24) | vlen;
        for v in [n, info, x] {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        let id = self.next;
        self.next += 1;
        id
    }

    /// The id the next type will get.
    pub fn next_id(&self) -> u32 {
        self.next
    }

    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.head(name, kind::INT, 0, false, size);
        self.types.extend_from_slice(&(size * 8).to_le_bytes());
        id
    }

    pub fn ptr(&mut self, to: u32) -> u32 {
        self.head("", kind::PTR, 0, false, to)
    }

    pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.head(name, kind::TYPEDEF, 0, false, to)
    }

    pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.head("", kind::ARRAY, 0, false, 0);
        for v in [elem, index, n] {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        id
    }

    /// Members as (name, type, bit offset, bitfield size or 0).
    pub fn composite(
        &mut self,
        union: bool,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let bitfields = members.iter().any(|m| m.3 != 0);
        let k = if union { kind::UNION } else { kind::STRUCT };
        let id = self.head(name, k, members.len() as u32, bitfields, size);
        for &(n, ty, off, bits) in members {
            let n = self.s(n);
            let off = if bitfields { (bits << 24) | off } else { off };
            for v in [n, ty, off] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
        }
        id
    }

    pub fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
        let id = self.head("", kind::FUNC_PROTO, params.len() as u32, false, ret);
        for &p in params {
            self.types.extend_from_slice(&0u32.to_le_bytes());
            self.types.extend_from_slice(&p.to_le_bytes());
        }
        id
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&super::MAGIC.to_le_bytes());
        b.push(1);
        b.push(0);
        let hdr_len = 24u32;
        let tl = self.types.len() as u32;
        for v in [hdr_len, 0, tl, tl, self.strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.types);
        b.extend_from_slice(&self.strings);
        b
    }
}
