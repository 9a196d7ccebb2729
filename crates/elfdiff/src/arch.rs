//! Architecture-specific knowledge behind one interface (x86-64 today): where a PC-relative
//! relocation really points, how a function's ftrace entry looks, and which sections of code
//! reached only by reference are copied piece by piece.

use std::collections::HashMap;

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
    /// the entry uses, when the entry says so. `None`: the piece at that offset. `members`:
    /// offsets of structure members in the target (`struct.member`, from its DWARF).
    fn entry_reference_len(
        &self,
        section: &str,
        entry: &[u8],
        field: u64,
        members: &HashMap<String, u64>,
    ) -> Option<u64>;
    /// A pointer-sized runtime constant (the kernel's `runtime_const_ptr(sym)`) whose
    /// placeholder immediate starts at `site` of `code`: the instruction rewritten to load the
    /// variable `sym` itself, through one relocation against it. The kernel patches the
    /// placeholder in vmlinux at boot and never in a module; the variable holds the value
    /// that was patched in. An error says why the bytes are not the expected site.
    fn runtime_ptr_load(&self, code: &[u8], site: u64) -> Result<ConstLoad, String>;
    /// The prefix of the traceable stubs `SYSCALL_DEFINEn` wraps a syscall's body in
    /// (x86-64: `__x64_sys_`), for refusal hints.
    fn syscall_stub_prefix(&self) -> &'static str;
}

/// The placeholder `runtime_const_ptr()` emits, replaced at boot in vmlinux only.
pub const RUNTIME_PTR_PLACEHOLDER: u64 = 0x0123_4567_89ab_cdef;

/// A runtime-constant load rewritten into a load of its variable (`Arch::runtime_ptr_load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstLoad {
    /// Offset in the code of the first byte replaced.
    pub start: u64,
    /// The replacement, as long as the instruction it replaces; the relocated field is zero.
    pub bytes: Vec<u8>,
    /// Offset in the code of the field the relocation fills.
    pub field: u64,
    /// Relocation type and addend against the variable.
    pub r_type: u32,
    pub addend: i64,
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

    fn runtime_ptr_load(&self, code: &[u8], site: u64) -> Result<ConstLoad, String> {
        // `movabs $imm64, %reg`: REX.W (plus REX.B for r8-r15), B8+r, imm64 at `site`.
        let at = usize::try_from(site)
            .ok()
            .filter(|&s| s >= 2)
            .ok_or_else(|| format!("site {site:#x} leaves no room for a movabs before it"))?;
        let insn = code
            .get(at - 2..at.saturating_add(8))
            .ok_or_else(|| format!("site {site:#x}: a 10-byte movabs does not fit in the code"))?;
        let (rex, op, imm) = (insn[0], insn[1], &insn[2..]);
        if rex != 0x48 && rex != 0x49 {
            return Err(format!(
                "byte {rex:#04x} at {:#x} is not the REX.W prefix of a movabs to a register",
                site - 2
            ));
        }
        if !(0xb8..=0xbf).contains(&op) {
            return Err(format!(
                "byte {op:#04x} at {:#x} is not a movabs-to-register opcode (b8+r)",
                site - 1
            ));
        }
        let value = u64::from_le_bytes(imm.try_into().expect("8 bytes"));
        if value != RUNTIME_PTR_PLACEHOLDER {
            return Err(format!(
                "the immediate {value:#x} at {site:#x} is not the runtime-constant placeholder {RUNTIME_PTR_PLACEHOLDER:#x}"
            ));
        }
        let reg = op - 0xb8;
        // `mov disp32(%rip), %reg`: REX.W (REX.R for r8-r15), 8B, ModRM mod=00 r/m=101
        // (RIP-relative), disp32; then a 3-byte NOP (`nopl (%rax)`) to fill the 10 bytes.
        let rex_r = if rex == 0x49 { 0x04 } else { 0 };
        let bytes = vec![
            0x48 | rex_r,
            0x8b,
            0x05 | (reg << 3),
            0,
            0,
            0,
            0,
            0x0f,
            0x1f,
            0x00,
        ];
        Ok(ConstLoad {
            start: site - 2,
            bytes,
            field: site + 1,
            r_type: object::elf::R_X86_64_PC32,
            // The CPU adds the displacement to the end of the 7-byte load, 4 past the field.
            addend: -4,
        })
    }

    fn syscall_stub_prefix(&self) -> &'static str {
        "__x64_sys_"
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

    fn entry_reference_len(
        &self,
        section: &str,
        entry: &[u8],
        field: u64,
        members: &HashMap<String, u64>,
    ) -> Option<u64> {
        if section != ".altinstructions" {
            return None;
        }
        // The target's own layout of struct alt_instr, when its DWARF gave it.
        if let (Some(&repl), Some(&len)) = (
            members.get("alt_instr.repl_offset"),
            members.get("alt_instr.replacementlen"),
        ) {
            if field != repl {
                return None;
            }
            return entry.get(usize::try_from(len).ok()?).map(|&l| u64::from(l));
        }
        // Else the layouts klpgen knows: struct alt_instr { s32 instr_offset; s32
        // repl_offset; <feature: u32 since 6.3, u16 before>; u8 instrlen; u8 replacementlen;
        // } __packed: 14 bytes (12 before 6.3), `replacementlen` the last byte. Older layouts
        // (a trailing `padlen`) are not read.
        if field == 4 && matches!(entry.len(), 12 | 14) {
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
    fn runtime_ptr_becomes_rip_relative_load() {
        let imm = RUNTIME_PTR_PLACEHOLDER.to_le_bytes();
        // endbr64; movabs $placeholder, %rax; ret
        let mut code = vec![0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0xb8];
        code.extend_from_slice(&imm);
        code.push(0xc3);
        let load = X86_64.runtime_ptr_load(&code, 6).unwrap();
        assert_eq!(load.start, 4);
        assert_eq!(load.bytes, [0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x0f, 0x1f, 0x00]);
        assert_eq!(
            (load.field, load.r_type, load.addend),
            (7, elf::R_X86_64_PC32, -4)
        );
        // Decoded: mov 0x0(%rip), %rax then a NOP, ending where the movabs ended.
        code.splice(4..14, load.bytes.iter().copied());
        let mut out = Vec::new();
        let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
        while d.can_decode() {
            out.push(d.decode());
        }
        let codes: Vec<Code> = out.iter().map(|i| i.code()).collect();
        assert_eq!(
            codes,
            [
                Code::Endbr64,
                Code::Mov_r64_rm64,
                Code::Nop_rm32,
                Code::Retnq
            ]
        );
        assert_eq!(out[1].op0_register(), iced_x86::Register::RAX);
        assert!(out[1].is_ip_rel_memory_operand());
        assert_eq!((out[1].ip(), out[1].next_ip()), (4, 11));

        // r13 (REX.B, B8+5) and rdi (B8+7) keep their register.
        for (rex, op, want_rex, want_modrm, reg) in [
            (0x49, 0xbd, 0x4c, 0x2d, iced_x86::Register::R13),
            (0x48, 0xbf, 0x48, 0x3d, iced_x86::Register::RDI),
            (0x49, 0xb8, 0x4c, 0x05, iced_x86::Register::R8),
        ] {
            let mut c = vec![rex, op];
            c.extend_from_slice(&imm);
            let load = X86_64.runtime_ptr_load(&c, 2).unwrap();
            assert_eq!(&load.bytes[..3], &[want_rex, 0x8b, want_modrm]);
            let insn = Decoder::with_ip(64, &load.bytes, 0, DecoderOptions::NONE).decode();
            assert_eq!(insn.code(), Code::Mov_r64_rm64);
            assert_eq!(insn.op0_register(), reg);
            assert_eq!(insn.len(), 7);
        }
    }

    #[test]
    fn runtime_ptr_wrong_bytes_are_refused() {
        let imm = RUNTIME_PTR_PLACEHOLDER.to_le_bytes();
        let site = |pre: &[u8], imm: &[u8]| [pre, imm].concat();
        // Another immediate.
        let other = site(&[0x48, 0xb8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert!(X86_64
            .runtime_ptr_load(&other, 2)
            .unwrap_err()
            .contains("placeholder"));
        // No REX.W (a 32-bit mov) or a REX.W with other bits.
        for rex in [0x40, 0x4c, 0x90] {
            let c = site(&[rex, 0xb8], &imm);
            assert!(X86_64
                .runtime_ptr_load(&c, 2)
                .unwrap_err()
                .contains("REX.W"));
        }
        // Not a mov to a register (mov $imm32, r/m64 is C7).
        let c = site(&[0x48, 0xc7], &imm);
        assert!(X86_64
            .runtime_ptr_load(&c, 2)
            .unwrap_err()
            .contains("opcode"));
        // Out of bounds either way.
        assert!(X86_64.runtime_ptr_load(&imm, 0).is_err());
        let c = site(&[0x48, 0xb8], &imm[..7]);
        assert!(X86_64.runtime_ptr_load(&c, 2).is_err());
        assert!(X86_64.runtime_ptr_load(&c, u64::MAX).is_err());
    }

    /// `entry_reference_len` for an `.altinstructions` entry.
    fn alt_len(entry: &[u8], field: u64, members: &HashMap<String, u64>) -> Option<u64> {
        X86_64.entry_reference_len(".altinstructions", entry, field, members)
    }

    #[test]
    fn alt_instr_gives_its_replacement_length() {
        let none = HashMap::new();
        // instr_offset, repl_offset, ft_flags, instrlen 5, replacementlen 3.
        let entry = [0, 0, 0, 0, 0, 0, 0, 0, 0x34, 1, 0, 0, 5, 3];
        assert_eq!(alt_len(&entry, 4, &none), Some(3));
        let empty = [0, 0, 0, 0, 0, 0, 0, 0, 0x9a, 0, 0, 0, 5, 0];
        assert_eq!(alt_len(&empty, 4, &none), Some(0));
        // Only the replacement field, only known layouts.
        assert_eq!(alt_len(&entry, 0, &none), None);
        assert_eq!(alt_len(&entry[..13], 4, &none), None);
        assert_eq!(
            X86_64.entry_reference_len("__jump_table", &entry, 4, &none),
            None
        );
    }

    #[test]
    fn alt_instr_layout_from_the_target() {
        // A layout none of the known ones is: 16 bytes, repl_offset at 8, replacementlen at
        // 13 (and a flags byte after it).
        let members: HashMap<String, u64> = [
            ("alt_instr.repl_offset".to_string(), 8),
            ("alt_instr.replacementlen".to_string(), 13),
        ]
        .into();
        let entry = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 7, 0xff, 0];
        assert_eq!(alt_len(&entry, 8, &members), Some(7));
        assert_eq!(alt_len(&entry, 4, &members), None);
        // The heuristic would have read the last byte.
        assert_eq!(alt_len(&entry[..14], 4, &HashMap::new()), Some(7));
        // A member past the entry's end gives nothing.
        assert_eq!(alt_len(&entry[..13], 8, &members), None);
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
