//! Architecture-specific knowledge behind one interface (x86-64 today): where a PC-relative
//! relocation really points, and how a function's ftrace entry looks.

use iced_x86::{Decoder, DecoderOptions};

use crate::model::reloc_is_pcrel;

/// What the differ needs to know about an instruction set.
pub trait Arch {
    /// For a relocation at `site` inside executable `code`, the distance from the relocation
    /// site to the address the CPU adds the field to (x86: the end of the instruction).
    /// The real target offset is `addend + bias`.
    fn pcrel_bias(&self, code: &[u8], insns: &InsnMap, site: u64, r_type: u32) -> i64;
    /// Decode instruction boundaries of a code section.
    fn decode(&self, code: &[u8]) -> InsnMap;
    /// The symbol name of the ftrace entry call.
    fn fentry_symbol(&self) -> &'static str;
    /// How far into a function the ftrace call may sit (after `endbr64`).
    fn fentry_window(&self) -> u64;
}

/// Instruction boundaries of one code section: sorted (start, end) pairs.
#[derive(Debug, Default, Clone)]
pub struct InsnMap {
    pub insns: Vec<(u64, u64)>,
}

impl InsnMap {
    /// The instruction containing `offset`.
    pub fn containing(&self, offset: u64) -> Option<(u64, u64)> {
        let i = self.insns.partition_point(|&(start, _)| start <= offset);
        let (start, end) = *self.insns.get(i.checked_sub(1)?)?;
        (offset < end).then_some((start, end))
    }
}

pub struct X86_64;

impl Arch for X86_64 {
    fn pcrel_bias(&self, _code: &[u8], insns: &InsnMap, site: u64, r_type: u32) -> i64 {
        if !reloc_is_pcrel(r_type) {
            return 0;
        }
        let width = crate::model::reloc_width(r_type).unwrap_or(4) as i64;
        match insns.containing(site) {
            Some((_, end)) if end >= site + width as u64 => (end - site) as i64,
            _ => width,
        }
    }

    fn decode(&self, code: &[u8]) -> InsnMap {
        let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
        let mut insns = Vec::with_capacity(code.len() / 4);
        while decoder.can_decode() {
            let insn = decoder.decode();
            let start = insn.ip();
            insns.push((start, start + insn.len() as u64));
        }
        InsnMap { insns }
    }

    fn fentry_symbol(&self) -> &'static str {
        "__fentry__"
    }

    fn fentry_window(&self) -> u64 {
        // endbr64 (4 bytes) then the 5-byte call; the relocation field starts one byte in.
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::elf;

    #[test]
    fn bias_is_distance_to_instruction_end() {
        // cmpl $0x5, 0x0(%rip): 83 3d <disp32> 05 -> field at 2, insn end at 7: bias 5.
        let code = [0x83, 0x3d, 0, 0, 0, 0, 0x05, 0xc3];
        let map = X86_64.decode(&code);
        assert_eq!(X86_64.pcrel_bias(&code, &map, 2, elf::R_X86_64_PC32), 5);
        // Absolute relocations have no bias.
        assert_eq!(X86_64.pcrel_bias(&code, &map, 2, elf::R_X86_64_32S), 0);
    }

    #[test]
    fn call_has_bias_four() {
        let code = [0xe8, 0, 0, 0, 0, 0xc3];
        let map = X86_64.decode(&code);
        assert_eq!(X86_64.pcrel_bias(&code, &map, 1, elf::R_X86_64_PLT32), 4);
        assert_eq!(map.containing(5), Some((5, 6)));
        assert_eq!(map.containing(6), None);
    }
}
