//! x86-64: its relocation types, instruction decoding (the call graph's control flow, the
//! comparison's moved immediates, `klpgen explain`'s Intel-syntax disassembly: the common
//! instructions by `x86_fast.rs`, which builds no tables at start, the others by iced-x86),
//! the `__fentry__` entry after an optional `endbr64`, the code copied piece by piece, the
//! special sections objtool and the kernel's x86 macros write (with their entry layouts from
//! Linux 3.0 on), and the rewrite of a pointer runtime constant.
//!
//! The rewrite checks the `movabs $placeholder, %reg` byte for byte and makes it
//! `mov sym(%rip), %reg` plus a 3-byte NOP with a PC32 relocation against the variable. Of the
//! carved sections, `.altinstr_replacement` pieces are reached from `alt_instr` entries, which
//! use `replacementlen` bytes, `.altinstr_aux` pieces from `_static_cpu_has()`'s jumps, and
//! `.fixup` pieces (until 5.16) from `__ex_table` entries. `CONFIG_X86_KERNEL_IBT` delays
//! objtool to the linked module.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use iced_x86::{
    Code, Decoder, DecoderOptions, Formatter as _, Instruction, IntelFormatter, Mnemonic, OpKind,
    Register, SymbolResolver, SymbolResult,
};
use object::elf;

use super::x86_fast;
use super::{
    Arch, CarvedCode, ConstLoad, Disassembly, EntryField, EntryLayout, FieldTarget, Flow, FlowInsn,
    Immediate, Insn, InsnMap, OperandLabel, RelocKind, SpecialSection, RUNTIME_PTR_PLACEHOLDER,
};

/// Sections whose entries point into functions and must be cut per entry, with their entry
/// layouts from Linux 3.0 on. `entry_size: None` means the size comes from the target (DWARF
/// struct), the command line, or the one known layout that matches the section.
const SPECIAL_SECTIONS: &[SpecialSection] = &[
    special("__mcount_loc", Some(8), None, &[]),
    special("__bug_table", None, Some("bug_entry"), BUG_TABLE),
    special("__ex_table", None, Some("exception_table_entry"), EX_TABLE),
    special("__jump_table", None, Some("jump_entry"), JUMP_TABLE),
    special(".altinstructions", None, Some("alt_instr"), ALTINSTRUCTIONS),
    // `struct paravirt_patch_site` (until 6.7): 16 bytes on x86-64 in every kernel.
    special(
        ".parainstructions",
        Some(16),
        Some("paravirt_patch_site"),
        PARAINSTRUCTIONS,
    ),
    special(".smp_locks", Some(4), None, &[]),
    special(
        ".static_call_sites",
        None,
        Some("static_call_site"),
        STATIC_CALL_SITES,
    ),
    // Pointers to `struct pi_entry` objects (`_entry`), not the structures themselves.
    special(".printk_index", Some(8), None, &[]),
    special(".retpoline_sites", Some(4), None, &[]),
    special(".return_sites", Some(4), None, &[]),
    special(".call_sites", Some(4), None, &[]),
    special(".ibt_endbr_seal", Some(4), None, &[]),
    special(".cfi_sites", Some(4), None, &[]),
];

const PC32: RelocKind = RelocKind::bytes(4, true);
const PC64: RelocKind = RelocKind::bytes(8, true);
const ABS64: RelocKind = RelocKind::bytes(8, false);

/// A field that may point anywhere.
const fn at(at: u64, kind: RelocKind) -> EntryField {
    EntryField {
        at,
        kind,
        to: FieldTarget::Any,
    }
}

const fn layout(size: u64, fields: &'static [EntryField], kernels: &'static str) -> EntryLayout {
    EntryLayout {
        size,
        fields,
        line: None,
        short_tail: false,
        kernels,
    }
}

/// `struct bug_entry` with relative pointers: {bug_addr_disp, file_disp, u16 line, u16 flags}
/// with `CONFIG_DEBUG_BUGVERBOSE`, {bug_addr_disp, u16 flags, pad} without.
const BUG_TABLE: &[EntryLayout] = &[
    EntryLayout {
        line: Some((8, 2)),
        ..layout(12, &[at(0, PC32), at(4, PC32)], "CONFIG_DEBUG_BUGVERBOSE")
    },
    layout(8, &[at(0, PC32)], "no CONFIG_DEBUG_BUGVERBOSE"),
];

/// `struct exception_table_entry`: absolute {insn, fixup} until 3.4, relative from 3.5, a
/// relative `handler` from 4.6, which 5.16 replaced by `data` (a constant).
///
/// An even number of 4.6 entries also divides into 8-byte pairs of relative relocations: the
/// `handler` field (a relocation against the handler function itself, addend 0) is what tells
/// them apart, never where an `insn` field points.
const EX_TABLE: &[EntryLayout] = &[
    layout(16, &[at(0, ABS64), at(8, ABS64)], "Linux 3.4 and older"),
    layout(
        8,
        &[
            EntryField {
                to: FieldTarget::NotSymbolStart,
                ..at(0, PC32)
            },
            at(4, PC32),
        ],
        "Linux 3.5 to 4.5",
    ),
    layout(
        12,
        &[
            at(0, PC32),
            at(4, PC32),
            EntryField {
                to: FieldTarget::SymbolStart,
                ..at(8, PC32)
            },
        ],
        "Linux 4.6 to 5.15",
    ),
    layout(12, &[at(0, PC32), at(4, PC32)], "Linux 5.16 and later"),
];

/// `struct jump_entry`: absolute {code, target, key} until 4.19, then {s32 code, s32 target,
/// s64 key} relative.
const JUMP_TABLE: &[EntryLayout] = &[
    layout(
        24,
        &[at(0, ABS64), at(8, ABS64), at(16, ABS64)],
        "Linux 4.19 and older",
    ),
    layout(
        16,
        &[at(0, PC32), at(4, PC32), at(8, PC64)],
        "Linux 4.20 and later",
    ),
];

/// `struct alt_instr`: absolute pointers until 3.0 (each entry aligned before it, so the last
/// one is 20 bytes), then relative {instr_offset, repl_offset, u16 cpuid, u8 instrlen, u8
/// replacementlen} = 12, plus `u8 padlen` from 4.1 to 5.12 = 13, and a u32 feature word from
/// 6.3 = 14. The 5.10 stable series dropped `padlen` again with the retbleed backports of
/// 5.10.133 (Debian 11's 5.10.223 has 12-byte entries), so a 5.10 object can have either.
const ALTINSTRUCTIONS: &[EntryLayout] = &[
    EntryLayout {
        short_tail: true,
        ..layout(24, &[at(0, ABS64), at(8, ABS64)], "Linux 3.0 and older")
    },
    layout(
        12,
        &[at(0, PC32), at(4, PC32)],
        "Linux 3.1 to 4.0, 5.10.133 and later 5.10, and 5.13 to 6.2",
    ),
    layout(
        13,
        &[at(0, PC32), at(4, PC32)],
        "Linux 4.1 to 5.12 (5.10 until 5.10.132)",
    ),
    layout(14, &[at(0, PC32), at(4, PC32)], "Linux 6.3 and later"),
];

/// `struct paravirt_patch_site` {instr, u8 type, u8 len, (u16 clobbers)}: 16 bytes, each entry
/// aligned before it and, in most kernels, not after: the section's last entry is 12 bytes.
const PARAINSTRUCTIONS: &[EntryLayout] = &[EntryLayout {
    short_tail: true,
    ..layout(16, &[at(0, ABS64)], "Linux 6.7 and older")
}];

/// `struct static_call_site` {s32 addr, s32 key}.
const STATIC_CALL_SITES: &[EntryLayout] = &[layout(
    8,
    &[at(0, PC32), at(4, PC32)],
    "Linux 5.10 and later",
)];

const fn special(
    name: &'static str,
    entry_size: Option<u64>,
    layout: Option<&'static str>,
    layouts: &'static [EntryLayout],
) -> SpecialSection {
    SpecialSection {
        name,
        entry_size,
        layout,
        layouts,
    }
}

/// Sections objtool writes: when it runs again on the livepatch (on the linked module: with
/// IBT or Clang LTO, "delayed objtool"; or, on ORC targets that run it per object, klpgen runs
/// it on the livepatch object), copies would collide with what it regenerates.
const OBJTOOL_SECTIONS: &[&str] = &[
    ".retpoline_sites",
    ".return_sites",
    ".call_sites",
    ".ibt_endbr_seal",
    ".cfi_sites",
    ".static_call_sites",
    ".orc_unwind",
    ".orc_unwind_ip",
    ".orc_header",
];

/// The x86-64 machine (`EM_X86_64`).
#[derive(Debug)]
pub struct X86_64;

impl Arch for X86_64 {
    fn name(&self) -> &'static str {
        "x86-64"
    }

    fn debian_arch(&self) -> &'static str {
        "amd64"
    }

    fn e_machine(&self) -> u16 {
        elf::EM_X86_64
    }

    fn object_architecture(&self) -> object::Architecture {
        object::Architecture::X86_64
    }

    fn endianness(&self) -> object::Endianness {
        object::Endianness::Little
    }

    fn reloc(&self, r_type: u32) -> Option<RelocKind> {
        let (width, pc_relative) = match r_type {
            elf::R_X86_64_NONE => (0, false),
            elf::R_X86_64_64 => (8, false),
            elf::R_X86_64_PC32 => (4, true),
            elf::R_X86_64_PLT32 => (4, true),
            elf::R_X86_64_GOTPCREL => (4, true),
            elf::R_X86_64_32 => (4, false),
            elf::R_X86_64_32S => (4, false),
            elf::R_X86_64_16 => (2, false),
            elf::R_X86_64_PC16 => (2, true),
            elf::R_X86_64_8 => (1, false),
            elf::R_X86_64_PC8 => (1, true),
            elf::R_X86_64_PC64 => (8, true),
            elf::R_X86_64_GOTOFF64 => (8, false),
            elf::R_X86_64_GOTPC64 => (8, false),
            elf::R_X86_64_GOTPCRELX => (4, true),
            elf::R_X86_64_REX_GOTPCRELX => (4, true),
            _ => return None,
        };
        Some(RelocKind::bytes(width, pc_relative))
    }

    fn reloc_name(&self, r_type: u32) -> Option<&'static str> {
        Some(match r_type {
            elf::R_X86_64_NONE => "R_X86_64_NONE",
            elf::R_X86_64_64 => "R_X86_64_64",
            elf::R_X86_64_PC32 => "R_X86_64_PC32",
            elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
            elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
            elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
            elf::R_X86_64_32 => "R_X86_64_32",
            elf::R_X86_64_32S => "R_X86_64_32S",
            elf::R_X86_64_16 => "R_X86_64_16",
            elf::R_X86_64_PC16 => "R_X86_64_PC16",
            elf::R_X86_64_8 => "R_X86_64_8",
            elf::R_X86_64_PC8 => "R_X86_64_PC8",
            elf::R_X86_64_PC64 => "R_X86_64_PC64",
            elf::R_X86_64_GOTOFF64 => "R_X86_64_GOTOFF64",
            elf::R_X86_64_GOTPC64 => "R_X86_64_GOTPC64",
            elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
            elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
            _ => return None,
        })
    }

    fn pcrel_bias(&self, r_type: u32, site: u64, insn: Option<(u64, u64)>) -> i64 {
        // objtool turns a jump-label `jmp` into a NOP and its relocation into
        // R_X86_64_NONE, keeping the jump's target and addend (-4): inside an instruction it
        // counts, as the jump's field did, from the instruction's end (else the target, the
        // start of `f.cold`, reads as 4 bytes before it).
        if r_type == elf::R_X86_64_NONE {
            return match insn {
                Some((start, end)) if site > start && site < end => (end - site) as i64,
                _ => 0,
            };
        }
        let Some(kind) = self.reloc(r_type).filter(|k| k.pc_relative) else {
            return 0;
        };
        // The CPU adds the field to the end of its instruction; where the code was not
        // decoded (or the field runs past the decoded instruction), the field is taken to
        // end it (call, jmp, and RIP-relative operands without an immediate).
        let width = kind.width as i64;
        match insn {
            Some((_, end)) if end >= site.saturating_add(width as u64) => (end - site) as i64,
            _ => width,
        }
    }

    fn pcrel_bias_reads_insn(&self, r_type: u32) -> bool {
        // Only PC-relative fields count from the end of their instruction, and objtool's
        // R_X86_64_NONE of a jump label turned NOP (see `pcrel_bias`).
        r_type == elf::R_X86_64_NONE || self.reloc(r_type).is_some_and(|k| k.pc_relative)
    }

    fn decode(&self, code: &[u8]) -> InsnMap {
        let mut insns = Vec::with_capacity(code.len() / 4);
        let mut at = 0;
        while at < code.len() {
            let len = match x86_fast::length(&code[at..]) {
                Some(len) => len,
                None => iced_at(code, at).0.len().max(1),
            };
            insns.push((at as u64, (at + len) as u64));
            at += len;
        }
        InsnMap { insns }
    }

    fn decode_insns(&self, code: &[u8]) -> Vec<Insn> {
        let mut out = Vec::with_capacity(code.len() / 4);
        let mut at = 0;
        while at < code.len() {
            let insn = match x86_fast::decode(&code[at..]) {
                Some(i) => Insn {
                    start: at as u64,
                    len: i.len as u64,
                    call: i.is_call() || i.flow(0).0 == Flow::Jump,
                    imm: i.moved_immediate(),
                },
                None => iced_insn(code, at),
            };
            at += insn.len as usize;
            out.push(insn);
        }
        out
    }

    fn disassemble(
        &self,
        code: &[u8],
        offset: u64,
        labels: &[OperandLabel],
    ) -> Option<Disassembly> {
        let rest = code.get(usize::try_from(offset).ok()?..)?;
        if rest.is_empty() {
            return None;
        }
        if let Some((text, labels_used)) =
            x86_fast::decode(rest).and_then(|i| x86_fast::format(&i, offset, labels))
        {
            return Some(Disassembly { text, labels_used });
        }
        let mut d = Decoder::with_ip(64, rest, offset, DecoderOptions::NONE);
        let (text, labels_used) = iced_text(&d.decode(), labels);
        Some(Disassembly { text, labels_used })
    }

    fn fentry_symbol(&self) -> &'static str {
        "__fentry__"
    }

    fn fentry_window(&self) -> u64 {
        // endbr64 (4 bytes) then the 5-byte call; the relocation field starts one byte in.
        16
    }

    fn decode_flow(&self, code: &[u8], base: u64, out: &mut Vec<FlowInsn>) {
        let mut at = 0;
        while at < code.len() {
            let ip = base + at as u64;
            if let Some(i) = x86_fast::decode(&code[at..]) {
                let (flow, target, field) = i.flow(ip);
                out.push(FlowInsn {
                    start: ip,
                    end: ip + i.len as u64,
                    flow,
                    target,
                    field,
                });
                at += i.len;
                continue;
            }
            let (insn, imm_at) = iced_at(code, at);
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
                // The target as encoded, relative to this section offset.
                (
                    insn.near_branch_target().wrapping_add(base),
                    ip + imm_at as u64,
                )
            };
            out.push(FlowInsn {
                start: ip,
                end: ip + insn.len() as u64,
                flow,
                target,
                field,
            });
            at += insn.len().max(1);
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

    fn delayed_objtool_options(&self) -> &'static [&'static str] {
        // kbuild's `delay-objtool` (scripts/Makefile.lib): IBT seals unused `endbr64`s, which
        // needs the whole module.
        &["CONFIG_X86_KERNEL_IBT"]
    }

    fn kernel_config(&self) -> &'static str {
        "CONFIG_X86_64"
    }

    fn kbuild_arch(&self) -> &'static str {
        "x86"
    }

    fn cross_compile(&self) -> &'static str {
        "x86_64-linux-gnu-"
    }

    fn host_arch(&self) -> &'static str {
        "x86_64"
    }

    fn pointer_reloc(&self) -> u32 {
        elf::R_X86_64_64
    }

    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL_SECTIONS
    }

    fn objtool_sections(&self) -> &'static [&'static str] {
        OBJTOOL_SECTIONS
    }

    fn known_section_prefixes(&self) -> &'static [&'static str] {
        // ORC (dropped: objtool regenerates it) and the code copied piece by piece.
        &[".orc_", ".altinstr_replacement", ".altinstr_aux", ".fixup"]
    }

    fn carved_code_sections(&self) -> &'static [CarvedCode] {
        // `.altinstr_replacement`: the replacement instructions of every alternative, each
        // reached from its `alt_instr` entry (`repl_offset`, a data PC32: the referenced
        // offset is the addend) and copied over the original instructions before it runs; a
        // replacement may jump back into its function.
        // `.altinstr_aux`: `_static_cpu_has()`'s fragments, each reached by the `jmp 6f` of
        // the original instruction in its function (a code PC32: the addend plus 4, the
        // distance to the end of the jump) and jumping back to labels of that function.
        // `.fixup` (until 5.16): the out-of-line code an `__ex_table` entry's `fixup` field
        // sends a faulting access to, which jumps back into its function.
        &[
            CarvedCode {
                name: ".altinstr_replacement",
                in_place: false,
            },
            CarvedCode {
                name: ".altinstr_aux",
                in_place: true,
            },
            CarvedCode {
                name: ".fixup",
                in_place: true,
            },
        ]
    }

    fn falls_through(&self, code: &[u8]) -> bool {
        let mut at = 0;
        let mut ends = false;
        while at < code.len() {
            match x86_fast::decode(&code[at..]) {
                Some(i) => {
                    ends = i.ends_flow();
                    at += i.len;
                }
                None => {
                    let i = iced_at(code, at).0;
                    ends = !i.is_invalid()
                        && matches!(
                            i.mnemonic(),
                            Mnemonic::Jmp | Mnemonic::Ret | Mnemonic::Ud2 | Mnemonic::Int3
                        );
                    at += i.len().max(1);
                }
            }
        }
        !ends
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
        // Else the layouts klpgen knows (`ALTINSTRUCTIONS`): struct alt_instr { s32
        // instr_offset; s32 repl_offset; <feature: u32 since 6.3, u16 before>; u8 instrlen; u8
        // replacementlen; } __packed: 14 bytes (12 before 6.3 and from 3.1 to 4.0),
        // `replacementlen` the last byte; from 4.1 to 5.12 (5.10 until 5.10.132) a `u8 padlen`
        // follows it (13 bytes). Until 3.0 the two offsets were 8-byte pointers and
        // `replacementlen` is byte 19 (of 20 emitted, 24 with the padding before the next
        // entry).
        let at = match (field, entry.len()) {
            (4, 12 | 14) => entry.len() - 1,
            (4, 13) => 11,
            (8, 20..=24) => 19,
            _ => return None,
        };
        entry.get(at).map(|&l| u64::from(l))
    }
}

/// The instruction iced decodes at `at` of `code` (section offsets as its IP), and the offset
/// of its immediate in it: what `x86_fast` leaves to iced. Its tables are built the first time
/// this runs.
fn iced_at(code: &[u8], at: usize) -> (Instruction, usize) {
    let mut d = Decoder::with_ip(64, &code[at..], at as u64, DecoderOptions::NONE);
    let insn = d.decode();
    let imm = d.get_constant_offsets(&insn).immediate_offset();
    (insn, imm)
}

/// [`Arch::decode_insns`]'s instruction at `at` of `code`, as iced decodes it.
pub(super) fn iced_insn(code: &[u8], at: usize) -> Insn {
    let mut d = Decoder::with_ip(64, &code[at..], at as u64, DecoderOptions::NONE);
    let i = d.decode();
    Insn {
        start: at as u64,
        len: i.len().max(1) as u64,
        call: i.mnemonic() == Mnemonic::Call
            || matches!(i.code(), Code::Jmp_rel32_64 | Code::Jmp_rel8_64),
        imm: moved_immediate(&d, &i, &code[at..]),
    }
}

/// The integer argument registers of the SysV x86-64 calling convention, in order, as the
/// 32-bit registers `mov $imm32, %r32` loads.
const ARG_REGS32: [Register; 6] = [
    Register::EDI,
    Register::ESI,
    Register::EDX,
    Register::ECX,
    Register::R8D,
    Register::R9D,
];

/// The immediate a `mov $imm, dst` or `push $imm` moves ([`Insn::imm`]): where its field is
/// (from the decoder's constant offsets), its value, and the argument register it loads.
/// `bytes`: the code from the instruction's start.
fn moved_immediate(d: &Decoder<'_>, i: &Instruction, bytes: &[u8]) -> Option<Immediate> {
    if !matches!(i.mnemonic(), Mnemonic::Mov | Mnemonic::Push) {
        return None;
    }
    let offsets = d.get_constant_offsets(i);
    if !offsets.has_immediate() || offsets.has_immediate2() {
        return None;
    }
    let (at, width) = (offsets.immediate_offset(), offsets.immediate_size());
    let field = bytes.get(at..at + width)?;
    let mut raw = [0u8; 8];
    raw[..width].copy_from_slice(field);
    // Sign-extend from the field's width.
    let shift = 64 - 8 * width as u32;
    let value = (i64::from_le_bytes(raw) << shift) >> shift;
    let arg = (i.code() == Code::Mov_r32_imm32)
        .then(|| ARG_REGS32.iter().position(|&r| r == i.op0_register()))
        .flatten()
        .map(|k| k as u8);
    Some(Immediate {
        at: at as u64,
        width: width as u64,
        value,
        arg,
    })
}

/// One instruction as iced-x86 formats it for `explain` (Intel syntax, `0x` hex in lower case,
/// a space after each operand separator), relocation targets named by `labels`; the text and
/// how many labels it used. `x86_fast::format` is held to this by its tests.
pub(super) fn iced_text(insn: &Instruction, labels: &[OperandLabel]) -> (String, usize) {
    let used = Rc::new(Cell::new(0));
    let resolver = RelocResolver {
        labels: labels
            .iter()
            .map(|l| (l.pc_relative, l.text.clone(), false))
            .collect(),
        next_ip: insn.next_ip(),
        used: Rc::clone(&used),
    };
    let mut fmt = IntelFormatter::with_options(Some(Box::new(resolver)), None);
    fmt.options_mut().set_hex_prefix("0x");
    fmt.options_mut().set_hex_suffix("");
    fmt.options_mut().set_uppercase_hex(false);
    fmt.options_mut().set_space_after_operand_separator(true);
    let mut text = String::new();
    fmt.format(insn, &mut text);
    (text, used.get())
}

/// Names relocation targets in place of the zero fields iced-x86 would show: PC-relative
/// operands resolve to the instruction's end (field 0), absolute ones to 0.
struct RelocResolver {
    labels: Vec<(bool, String, bool)>,
    next_ip: u64,
    used: Rc<Cell<usize>>,
}

impl SymbolResolver for RelocResolver {
    fn symbol(
        &mut self,
        _instruction: &Instruction,
        _operand: u32,
        _instruction_operand: Option<u32>,
        address: u64,
        _address_size: u32,
    ) -> Option<SymbolResult<'_>> {
        let next_ip = self.next_ip;
        let slot = self.labels.iter_mut().find(|(pcrel, _, taken)| {
            !*taken
                && if *pcrel {
                    address == next_ip
                } else {
                    address == 0
                }
        })?;
        slot.2 = true;
        self.used.set(self.used.get() + 1);
        Some(SymbolResult::with_string(address, slot.1.clone()))
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
        assert_eq!(
            X86_64.pcrel_bias(elf::R_X86_64_PC32, 2, map.containing(2)),
            5
        );
        // Absolute relocations have no bias.
        assert_eq!(
            X86_64.pcrel_bias(elf::R_X86_64_32S, 2, map.containing(2)),
            0
        );
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
        assert_eq!(alt_len(&entry[..11], 4, &none), None);
        // 4.1 to 5.12: `padlen` after `replacementlen`.
        let padded = [0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0, 5, 0, 5];
        assert_eq!(alt_len(&padded, 4, &none), Some(0));
        // Until 3.0: pointers, replacementlen at 19.
        let mut abs = [0u8; 24];
        abs[19] = 6;
        assert_eq!(alt_len(&abs, 8, &none), Some(6));
        assert_eq!(alt_len(&abs[..20], 8, &none), Some(6));
        assert_eq!(alt_len(&abs, 4, &none), None);
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
    fn machine_and_relocations() {
        let a = super::super::for_machine(elf::EM_X86_64).expect("supported");
        assert_eq!(a.name(), "x86-64");
        assert!(super::super::for_machine(elf::EM_SPARCV9).is_none());
        let pc32 = X86_64.reloc(elf::R_X86_64_PC32).unwrap();
        assert_eq!((pc32.width, pc32.pc_relative), (4, true));
        assert_eq!(X86_64.reloc_name(elf::R_X86_64_PC32), Some("R_X86_64_PC32"));
        let abs = X86_64.reloc(elf::R_X86_64_64).unwrap();
        assert_eq!((abs.width, abs.pc_relative), (8, false));
        assert_eq!(
            X86_64.reloc(elf::R_X86_64_GOTPC64).map(|k| k.pc_relative),
            Some(false)
        );
        assert_eq!(X86_64.reloc(elf::R_X86_64_GOT32), None);
        // Not decoded: a PC-relative field ends its instruction.
        assert_eq!(X86_64.pcrel_bias(elf::R_X86_64_PC32, 9, None), 4);
        assert_eq!(X86_64.pcrel_bias(elf::R_X86_64_64, 9, None), 0);
    }

    #[test]
    fn moved_immediates_and_calls() {
        // mov $0x2a, %esi; call f; mov $1, %rax (sign-extended imm32); cmp $5, %eax (not a
        // move); movl $0x1234, 0x8(%rsp); push $-3; jmp f; ret
        let code = [
            0xbe, 0x2a, 0, 0, 0, // 0
            0xe8, 0, 0, 0, 0, // 5
            0x48, 0xc7, 0xc0, 1, 0, 0, 0, // 10
            0x83, 0xf8, 0x05, // 17
            0xc7, 0x44, 0x24, 0x08, 0x34, 0x12, 0, 0, // 20
            0x6a, 0xfd, // 28
            0xe9, 0, 0, 0, 0,    // 30
            0xc3, // 35
        ];
        type Imm = Option<(u64, u64, i64, Option<u8>)>;
        let got: Vec<(u64, u64, bool, Imm)> = X86_64
            .decode_insns(&code)
            .iter()
            .map(|i| {
                let imm = i.imm.map(|m| (m.at, m.width, m.value, m.arg));
                (i.start, i.len, i.call, imm)
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 5, false, Some((1, 4, 0x2a, Some(1)))),
                (5, 5, true, None),
                (10, 7, false, Some((3, 4, 1, None))),
                (17, 3, false, None),
                (20, 8, false, Some((4, 4, 0x1234, None))),
                (28, 2, false, Some((1, 1, -3, None))),
                (30, 5, true, None),
                (35, 1, false, None),
            ]
        );
        // %edi is the first argument, %r8d (REX.B) the fifth.
        let arg = |c: &[u8]| X86_64.decode_insns(c)[0].imm.and_then(|m| m.arg);
        assert_eq!(arg(&[0xbf, 1, 0, 0, 0]), Some(0));
        assert_eq!(arg(&[0x41, 0xb8, 1, 0, 0, 0]), Some(4));
        // %eax is no argument register.
        assert_eq!(arg(&[0xb8, 1, 0, 0, 0]), None);
    }

    #[test]
    fn disassembly_names_relocated_operands() {
        let code = [0x90, 0xe8, 0, 0, 0, 0, 0xc3];
        let pcrel = |text: &str| OperandLabel {
            pc_relative: true,
            text: text.into(),
        };
        let d = X86_64.disassemble(&code, 1, &[pcrel("foo")]).unwrap();
        assert_eq!((d.text.as_str(), d.labels_used), ("call foo", 1));
        // A label for no operand is left unused.
        let d = X86_64.disassemble(&code, 6, &[pcrel("bar")]).unwrap();
        assert_eq!((d.text.as_str(), d.labels_used), ("ret", 0));
        assert_eq!(X86_64.disassemble(&code, 7, &[]), None);
    }

    #[test]
    fn call_has_bias_four() {
        let code = [0xe8, 0, 0, 0, 0, 0xc3];
        let map = X86_64.decode(&code);
        assert_eq!(
            X86_64.pcrel_bias(elf::R_X86_64_PLT32, 1, map.containing(1)),
            4
        );
        assert_eq!(map.containing(5), Some((5, 6)));
        assert_eq!(map.containing(6), None);
    }
}
