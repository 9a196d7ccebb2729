//! Architecture-specific knowledge behind one interface (x86-64 today): where a PC-relative
//! relocation really points, how a function's ftrace entry looks, and which sections of code
//! reached only by reference are copied piece by piece.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind};

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
    /// Decode `code` (found at section offset `base`) into instructions with their control
    /// flow, for the call graph; appends to `out`. Undecodable bytes become `Flow::Other`.
    fn decode_flow(&self, code: &[u8], base: u64, out: &mut Vec<FlowInsn>);
    /// Whether a branch to the named symbol is a thunk that stands for a return or an
    /// indirect branch (x86: return and retpoline thunks), not a call of that function.
    fn is_branch_thunk(&self, name: &str) -> bool;
    /// Length of the landing pad a function may start with (x86: `endbr64`), 0 if `code`
    /// does not start with one; a branch to just past it still enters the function.
    fn entry_pad_len(&self, code: &[u8]) -> u64;
    /// Sections of code reached only through references from elsewhere in the object, which
    /// the livepatch copies piece by piece (see `carve.rs`): each is cut at every offset an
    /// allocated section refers to (the referenced offset being the relocation's addend plus
    /// [`Arch::pcrel_bias`] at its site).
    fn carved_code_sections(&self) -> &'static [&'static str];
    /// For a relocation at `field` (an offset inside `entry`, one entry of special section
    /// `section`) that points into a carved section: how many bytes from the referenced offset
    /// the entry uses, when the entry says so. `None`: the piece at that offset.
    fn entry_reference_len(&self, section: &str, entry: &[u8], field: u64) -> Option<u64>;
}

/// How an instruction transfers control, as the call graph sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A direct call (x86: `call rel32`).
    Call,
    /// A direct unconditional jump (x86: `jmp rel32`/`rel8`).
    Jump,
    /// A direct conditional jump (x86: `jcc`, `loop`, `jrcxz`).
    CondJump,
    /// Anything else, indirect calls and jumps included.
    Other,
}

/// One decoded instruction of a code section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInsn {
    pub start: u64,
    pub end: u64,
    pub flow: Flow,
    /// For direct branches: the target as encoded (section offset), meaningless where a
    /// relocation fills the displacement field.
    pub target: u64,
    /// For direct branches: the section offset of the displacement field (where a relocation
    /// for the branch target sits).
    pub field: u64,
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
            Some((_, end)) if end >= site.saturating_add(width as u64) => (end - site) as i64,
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

    fn decode_flow(&self, code: &[u8], base: u64, out: &mut Vec<FlowInsn>) {
        let mut decoder = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut insn);
            let start = insn.ip();
            let end = insn.next_ip();
            let direct = !insn.is_invalid()
                && insn.op_count() == 1
                && insn.op0_kind() == OpKind::NearBranch64;
            let flow = match insn.code() {
                _ if !direct => Flow::Other,
                Code::Call_rel32_64 | Code::Call_rel16 => Flow::Call,
                Code::Jmp_rel32_64 | Code::Jmp_rel8_64 | Code::Jmp_rel16 => Flow::Jump,
                Code::Xbegin_rel32 | Code::Xbegin_rel16 => Flow::Other,
                // jcc, loop, loopcc, jrcxz.
                _ => Flow::CondJump,
            };
            let (target, field) = if flow == Flow::Other {
                (0, 0)
            } else {
                let offsets = decoder.get_constant_offsets(&insn);
                (
                    insn.near_branch_target(),
                    start + offsets.immediate_offset() as u64,
                )
            };
            out.push(FlowInsn {
                start,
                end,
                flow,
                target,
                field,
            });
        }
    }

    fn is_branch_thunk(&self, name: &str) -> bool {
        name == "__x86_return_thunk"
            || name.starts_with("__x86_indirect_thunk_")
            || name.starts_with("__x86_indirect_call_thunk_")
            || name.starts_with("__x86_indirect_jump_thunk_")
            || name == "__x86_return_skl"
            || name == "srso_return_thunk"
            || name == "srso_alias_return_thunk"
            || name == "retbleed_return_thunk"
            || name == "its_return_thunk"
            || name.starts_with("__x86_indirect_its_thunk_")
    }

    fn entry_pad_len(&self, code: &[u8]) -> u64 {
        if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            4
        } else {
            0
        }
    }

    fn carved_code_sections(&self) -> &'static [&'static str] {
        // `.altinstr_replacement`: the replacement instructions of every alternative, each
        // reached from its `alt_instr` entry (`repl_offset`, a data PC32: the referenced
        // offset is the addend); a replacement may jump back into its function.
        // `.altinstr_aux`: `_static_cpu_has()`'s fragments, each reached by the `jmp 6f` of
        // the original instruction in its function (a code PC32: the addend plus 4, the
        // distance to the end of the jump) and jumping back to labels of that function.
        &[".altinstr_replacement", ".altinstr_aux"]
    }

    fn entry_reference_len(&self, section: &str, entry: &[u8], field: u64) -> Option<u64> {
        // struct alt_instr { s32 instr_offset; s32 repl_offset; <feature: u32 since 6.3,
        // u16 before>; u8 instrlen; u8 replacementlen; } __packed: 14 bytes (12 before 6.3),
        // `replacementlen` the last byte. Older layouts (a trailing `padlen`) are not read.
        if section == ".altinstructions" && field == 4 && matches!(entry.len(), 12 | 14) {
            return entry.last().map(|&l| u64::from(l));
        }
        None
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
    fn flow_of_direct_branches() {
        let code = [
            0xe8, 0, 0, 0, 0, // 0x10 call 0x15
            0x0f, 0x85, 0xf5, 0xff, 0xff, 0xff, // 0x15 jne 0x10
            0xeb, 0xfe, // 0x1b jmp 0x1b
            0xe9, 0x10, 0, 0, 0, // 0x1d jmp 0x32
            0xff, 0xd0, // 0x22 call *%rax
            0xe2, 0xfc, // 0x24 loop 0x22
            0xc3, // 0x26 ret
        ];
        let mut out = Vec::new();
        X86_64.decode_flow(&code, 0x10, &mut out);
        let got: Vec<(u64, Flow, u64, u64)> = out
            .iter()
            .map(|i| (i.start, i.flow, i.target, i.field))
            .collect();
        assert_eq!(
            got,
            [
                (0x10, Flow::Call, 0x15, 0x11),
                (0x15, Flow::CondJump, 0x10, 0x17),
                (0x1b, Flow::Jump, 0x1b, 0x1c),
                (0x1d, Flow::Jump, 0x32, 0x1e),
                (0x22, Flow::Other, 0, 0),
                (0x24, Flow::CondJump, 0x22, 0x25),
                (0x26, Flow::Other, 0, 0),
            ]
        );
        assert!(X86_64.is_branch_thunk("__x86_return_thunk"));
        assert!(X86_64.is_branch_thunk("__x86_indirect_thunk_rax"));
        assert!(!X86_64.is_branch_thunk("schedule"));
        assert_eq!(X86_64.entry_pad_len(&[0xf3, 0x0f, 0x1e, 0xfa, 0xc3]), 4);
        assert_eq!(X86_64.entry_pad_len(&[0xc3]), 0);
    }

    #[test]
    fn alt_instr_gives_its_replacement_length() {
        // instr_offset, repl_offset, ft_flags, instrlen 5, replacementlen 3.
        let entry = [0, 0, 0, 0, 0, 0, 0, 0, 0x34, 1, 0, 0, 5, 3];
        assert_eq!(
            X86_64.entry_reference_len(".altinstructions", &entry, 4),
            Some(3)
        );
        let empty = [0, 0, 0, 0, 0, 0, 0, 0, 0x9a, 0, 0, 0, 5, 0];
        assert_eq!(
            X86_64.entry_reference_len(".altinstructions", &empty, 4),
            Some(0)
        );
        // Only the replacement field, only known layouts.
        assert_eq!(
            X86_64.entry_reference_len(".altinstructions", &entry, 0),
            None
        );
        assert_eq!(
            X86_64.entry_reference_len(".altinstructions", &entry[..13], 4),
            None
        );
        assert_eq!(X86_64.entry_reference_len("__jump_table", &entry, 4), None);
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
