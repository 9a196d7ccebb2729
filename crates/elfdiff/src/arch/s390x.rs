//! s390x (IBM Z, 64-bit big-endian): relocation types (the `*DBL` PC-relative fields count in
//! halfwords from the start of their instruction, two bytes before the field), the ftrace
//! entry (`brcl 0,0` at +0 under `-mnop-mcount`, recorded in `__mcount_loc`, or `brasl
//! %r0,__fentry__`), expoline thunks (`__s390_indirect_jump_rN`: returns and indirect branches
//! of `-mindirect-branch=thunk-extern`, recorded in `.s390_indirect_*`/`.s390_return_*`), the
//! alternatives and the other special sections of the s390 kernel.
//!
//! Decoding is written here: an instruction's length is in the top two bits of its first byte
//! (2, 4 or 6 bytes), and the branches the call graph follows are a handful of opcodes
//! (`brasl`, `brcl`, `bras`, `brc`, the compare-and-branch forms). No maintained pure-Rust
//! decoder exists for z/Architecture, and capstone (C) would add a C build to every build of
//! the differ for `klpgen explain` alone; so the disassembly covers the common instructions
//! of kernel code with a table of their formats, and shows any other as `.insn` bytes.
//!
//! A module reaches the kernel directly or through PLT entries the loader adds for every
//! `PLT32DBL` relocation, klp ones included (`arch/s390/kernel/module.c`), and loads external
//! data through GOT slots it adds for `GOTENT`: carried code needs no rewriting. Modules are
//! compiled with the same code-generation flags as vmlinux (`-fPIC`).

use std::collections::HashMap;

use object::elf;

use super::{
    Arch, CarvedCode, ConstLoad, Disassembly, Flow, FlowInsn, Immediate, Insn, InsnMap,
    OperandLabel, RelocKind, SpecialSection,
};

const SPECIAL_SECTIONS: &[SpecialSection] = &[
    special("__mcount_loc", Some(8), None),
    special("__bug_table", None, Some("bug_entry")),
    special("__ex_table", None, Some("exception_table_entry")),
    special("__jump_table", None, Some("jump_entry")),
    special(".altinstructions", None, Some("alt_instr")),
    special(".printk_index", Some(8), None),
    // Expolines: a 4-byte offset to each indirect branch or return through a thunk, which
    // the module loader reverts when the mitigation is off (`nospec_revert`).
    special(".s390_indirect_jump", Some(4), None),
    special(".s390_indirect_call", Some(4), None),
    special(".s390_indirect_branches", Some(4), None),
    special(".s390_return_reg", Some(4), None),
    special(".s390_return_mem", Some(4), None),
];

const fn special(
    name: &'static str,
    entry_size: Option<u64>,
    layout: Option<&'static str>,
) -> SpecialSection {
    // No older layouts are known on this machine: an entry size comes from the machine, the
    // target's DWARF or the command line.
    SpecialSection {
        name,
        entry_size,
        layout,
        layouts: &[],
    }
}

/// The s390x machine (`EM_S390`, 64-bit).
#[derive(Debug)]
pub struct S390x;

/// Length of the instruction whose first byte is `b`.
fn insn_len(b: u8) -> u64 {
    match b >> 6 {
        0 => 2,
        1 | 2 => 4,
        _ => 6,
    }
}

fn be16(code: &[u8], at: usize) -> Option<i64> {
    let b = code.get(at..at + 2)?;
    Some(i64::from(i16::from_be_bytes([b[0], b[1]])))
}

fn be32(code: &[u8], at: usize) -> Option<i64> {
    let b = code.get(at..at + 4)?;
    Some(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
}

/// The relative-immediate branches: (flow, where the halfword count sits, its width).
fn branch_of(insn: &[u8]) -> Option<(Flow, usize, usize)> {
    let (op, op2) = (*insn.first()?, insn.get(1).copied().unwrap_or(0));
    let mask = op2 >> 4;
    let by_mask = |m: u8| match m {
        0 => None,
        15 => Some(Flow::Jump),
        _ => Some(Flow::CondJump),
    };
    match (op, op2 & 0xf) {
        // brcl M,RI (jg, jgnop, jge...), brasl R,RI.
        (0xc0, 0x4) => by_mask(mask).map(|f| (f, 2, 4)),
        (0xc0, 0x5) => Some((Flow::Call, 2, 4)),
        // brc M,RI, bras R,RI, brct, brctg.
        (0xa7, 0x4) => by_mask(mask).map(|f| (f, 2, 2)),
        (0xa7, 0x5) => Some((Flow::Call, 2, 2)),
        (0xa7, 0x6 | 0x7) => Some((Flow::CondJump, 2, 2)),
        // brxh, brxle.
        (0x84 | 0x85, _) => Some((Flow::CondJump, 2, 2)),
        // Compare and branch relative: cgrj, clgrj, crj, clrj, cgij, clgij, cij, clij.
        (0xec, _) if matches!(insn.get(5), Some(0x64 | 0x65 | 0x76 | 0x77 | 0x7c..=0x7f)) => {
            Some((Flow::CondJump, 2, 2))
        }
        _ => None,
    }
}

impl Arch for S390x {
    fn name(&self) -> &'static str {
        "s390x"
    }

    fn debian_arch(&self) -> &'static str {
        "s390x"
    }

    fn e_machine(&self) -> u16 {
        elf::EM_S390
    }

    fn object_architecture(&self) -> object::Architecture {
        object::Architecture::S390x
    }

    fn endianness(&self) -> object::Endianness {
        object::Endianness::Big
    }

    fn reloc(&self, r_type: u32) -> Option<RelocKind> {
        let (width, pc_relative) = match r_type {
            elf::R_390_NONE => (0, false),
            elf::R_390_8 => (1, false),
            elf::R_390_16 => (2, false),
            elf::R_390_32 => (4, false),
            elf::R_390_64 => (8, false),
            elf::R_390_PC16 => (2, true),
            elf::R_390_PC32 => (4, true),
            elf::R_390_PC64 => (8, true),
            elf::R_390_PC16DBL | elf::R_390_PLT16DBL => (2, true),
            elf::R_390_PC32DBL | elf::R_390_PLT32DBL => (4, true),
            elf::R_390_PLT32 => (4, true),
            elf::R_390_PLT64 => (8, true),
            elf::R_390_GOTENT | elf::R_390_GOTPCDBL | elf::R_390_GOTPLTENT => (4, true),
            elf::R_390_GOTPC => (4, true),
            elf::R_390_GOT16 => (2, false),
            elf::R_390_GOT32 => (4, false),
            elf::R_390_GOT64 => (8, false),
            elf::R_390_GOTOFF16 => (2, false),
            elf::R_390_GOTOFF32 => (4, false),
            elf::R_390_GOTOFF64 => (8, false),
            // 12-bit displacement (low 12 bits of a halfword) and the 20-bit long
            // displacement (DL 12 bits, DH 8 bits) of base-displacement operands.
            elf::R_390_12 => return Some(RelocKind::bits(2, false, 0x0fff)),
            elf::R_390_20 => return Some(RelocKind::bits(4, false, 0x0fff_ff00)),
            _ => return None,
        };
        Some(RelocKind::bytes(width, pc_relative))
    }

    fn reloc_name(&self, r_type: u32) -> Option<&'static str> {
        Some(match r_type {
            elf::R_390_NONE => "R_390_NONE",
            elf::R_390_8 => "R_390_8",
            elf::R_390_12 => "R_390_12",
            elf::R_390_16 => "R_390_16",
            elf::R_390_20 => "R_390_20",
            elf::R_390_32 => "R_390_32",
            elf::R_390_64 => "R_390_64",
            elf::R_390_PC16 => "R_390_PC16",
            elf::R_390_PC32 => "R_390_PC32",
            elf::R_390_PC64 => "R_390_PC64",
            elf::R_390_PC16DBL => "R_390_PC16DBL",
            elf::R_390_PLT16DBL => "R_390_PLT16DBL",
            elf::R_390_PC32DBL => "R_390_PC32DBL",
            elf::R_390_PLT32DBL => "R_390_PLT32DBL",
            elf::R_390_PLT32 => "R_390_PLT32",
            elf::R_390_PLT64 => "R_390_PLT64",
            elf::R_390_GOTENT => "R_390_GOTENT",
            elf::R_390_GOTPCDBL => "R_390_GOTPCDBL",
            elf::R_390_GOTPLTENT => "R_390_GOTPLTENT",
            elf::R_390_GOTPC => "R_390_GOTPC",
            elf::R_390_GOT16 => "R_390_GOT16",
            elf::R_390_GOT32 => "R_390_GOT32",
            elf::R_390_GOT64 => "R_390_GOT64",
            elf::R_390_GOTOFF16 => "R_390_GOTOFF16",
            elf::R_390_GOTOFF32 => "R_390_GOTOFF32",
            elf::R_390_GOTOFF64 => "R_390_GOTOFF64",
            _ => return None,
        })
    }

    fn pcrel_bias(&self, r_type: u32, site: u64, insn: Option<(u64, u64)>) -> i64 {
        // `*DBL` and GOTENT fields count (in halfwords) from the start of their instruction,
        // which begins two bytes before the field in every format that has one (RI, RIL);
        // the relocation's addend carries those two bytes.
        let dbl = matches!(
            r_type,
            elf::R_390_PC16DBL
                | elf::R_390_PLT16DBL
                | elf::R_390_PC32DBL
                | elf::R_390_PLT32DBL
                | elf::R_390_GOTENT
                | elf::R_390_GOTPCDBL
                | elf::R_390_GOTPLTENT
        );
        if !dbl {
            return 0;
        }
        match insn {
            Some((start, _)) if start <= site => start as i64 - site as i64,
            _ => -2,
        }
    }

    fn decode(&self, code: &[u8]) -> InsnMap {
        let mut insns = Vec::with_capacity(code.len() / 4);
        let n = code.len() as u64;
        let mut at = 0u64;
        while at < n {
            let end = (at + insn_len(code[at as usize])).min(n);
            insns.push((at, end));
            at = end;
        }
        InsnMap { insns }
    }

    fn decode_flow(&self, code: &[u8], base: u64, out: &mut Vec<FlowInsn>) {
        for (s, e) in self.decode(code).insns {
            let bytes = &code[s as usize..e as usize];
            let (start, end) = (base + s, base + e);
            let branch = branch_of(bytes).and_then(|(flow, at, width)| {
                let count = if width == 4 {
                    be32(bytes, at)
                } else {
                    be16(bytes, at)
                }?;
                Some(FlowInsn {
                    start,
                    end,
                    flow,
                    target: start.wrapping_add_signed(count.wrapping_mul(2)),
                    field: start + at as u64,
                })
            });
            out.push(branch.unwrap_or(FlowInsn {
                start,
                end,
                flow: Flow::Other,
                target: 0,
                field: 0,
            }));
        }
    }

    fn decode_insns(&self, code: &[u8]) -> Vec<Insn> {
        self.decode(code)
            .insns
            .into_iter()
            .map(|(s, e)| {
                let b = &code[s as usize..e as usize];
                let (op, op2) = (b[0], b.get(1).copied().unwrap_or(0));
                // brasl, bras, basr, balr; and jg/j (brcl/brc 15: a tail call when a
                // relocation sends it out).
                let call = matches!((op, op2 & 0xf), (0xc0, 0x5) | (0xa7, 0x5))
                    || op == 0x0d
                    || op == 0x05
                    || (matches!((op, op2 & 0xf), (0xc0, 0x4) | (0xa7, 0x4)) && op2 >> 4 == 15);
                Insn {
                    start: s,
                    len: e - s,
                    call,
                    imm: moved_immediate(b),
                }
            })
            .collect()
    }

    fn disassemble(
        &self,
        code: &[u8],
        offset: u64,
        labels: &[OperandLabel],
    ) -> Option<Disassembly> {
        let at = usize::try_from(offset).ok().filter(|&a| a < code.len())?;
        let len = insn_len(code[at]) as usize;
        let b = &code[at..(at + len).min(code.len())];
        let mut used = 0;
        let mut pcrel = labels.iter().filter(|l| l.pc_relative).map(|l| &l.text);
        let mut target = |count: i64| -> String {
            match pcrel.next().filter(|_| count == 0) {
                Some(t) => {
                    used += 1;
                    t.clone()
                }
                None => format!("{:#x}", (offset as i64).wrapping_add(count.wrapping_mul(2))),
            }
        };
        let text = if b.len() < len {
            None
        } else {
            format_insn(b, &mut target)
        };
        let text = text.unwrap_or_else(|| {
            let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(".insn {}", hex.join(""))
        });
        Some(Disassembly {
            text,
            labels_used: used,
        })
    }

    fn fentry_symbol(&self) -> &'static str {
        "__fentry__"
    }

    fn fentry_window(&self) -> u64 {
        // The 6-byte `brcl 0,0` (or `brasl %r0,__fentry__`) at +0; its field at +2.
        8
    }

    fn entry_pad_len(&self, _code: &[u8]) -> u64 {
        0
    }

    fn is_branch_thunk(&self, name: &str) -> bool {
        name.starts_with("__s390_indirect_jump_r") || name.starts_with("__s390x_indirect_jump_r")
    }

    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL_SECTIONS
    }

    fn objtool_sections(&self) -> &'static [&'static str] {
        &[]
    }

    fn known_section_prefixes(&self) -> &'static [&'static str] {
        &[".altinstr_replacement"]
    }

    fn carved_code_sections(&self) -> &'static [CarvedCode] {
        // The alternatives' replacement instructions, each reached from its `alt_instr`.
        // Copied over the original instructions before it runs, never run where it lies.
        &[CarvedCode {
            name: ".altinstr_replacement",
            in_place: false,
        }]
    }

    fn falls_through(&self, code: &[u8]) -> bool {
        super::falls_through_by_flow(self, code)
    }

    fn entry_reference_len(
        &self,
        section: &str,
        entry: &[u8],
        field: u64,
        _members: &HashMap<String, u64>,
    ) -> Option<u64> {
        // struct alt_instr { s32 instr_offset; s32 repl_offset; <feature: u32 since 6.3,
        // u16 facility before>; u8 instrlen; } __packed: the replacement is as long as the
        // original, `instrlen` the last byte (13 bytes in 6.3+, 11 before).
        if section == ".altinstructions" && field == 4 && matches!(entry.len(), 11..=13) {
            return entry.last().map(|&l| u64::from(l));
        }
        None
    }

    fn runtime_ptr_load(&self, _code: &[u8], site: u64) -> Result<ConstLoad, String> {
        Err(format!(
            "site {site:#x}: klpgen does not know the layout of s390 runtime constants"
        ))
    }

    fn syscall_stub_prefix(&self) -> &'static str {
        "__s390x_sys_"
    }

    fn delayed_objtool_options(&self) -> &'static [&'static str] {
        &[]
    }

    fn kernel_config(&self) -> &'static str {
        "CONFIG_S390"
    }

    fn kbuild_arch(&self) -> &'static str {
        "s390"
    }

    fn cross_compile(&self) -> &'static str {
        "s390x-linux-gnu-"
    }

    fn host_arch(&self) -> &'static str {
        "s390x"
    }

    fn rust_unsupported(&self) -> Option<&'static str> {
        Some("the kernel's Rust support does not cover s390 in Linux 6.12 (x86-64, arm64, loongarch and riscv only)")
    }

    fn pointer_reloc(&self) -> u32 {
        elf::R_390_64
    }
}

/// Register operand names.
fn r(n: u8) -> String {
    format!("%r{}", n & 15)
}

/// `d(x,b)` / `d(b)` operands.
fn addr(d: i64, x: u8, b: u8) -> String {
    match (x, b) {
        (0, 0) => format!("{d}"),
        (0, b) => format!("{d}({})", r(b)),
        (x, b) => format!("{d}({},{})", r(x), r(b)),
    }
}

/// The common instructions of kernel code, as objdump spells them; None for others.
fn format_insn(b: &[u8], target: &mut dyn FnMut(i64) -> String) -> Option<String> {
    let (op, r1, r2) = (b[0], b.get(1)? >> 4, b[1] & 15);
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    // RX/RS displacement, RXY/RSY long displacement (DL 12 bits, DH signed 8 bits).
    let disp12 = || i64::from(u16_at(2) & 0xfff);
    let disp20 = || i64::from(b[4] as i8) << 12 | i64::from(u16_at(2) & 0xfff);
    let (x2, b2) = (b[1] & 15, b.get(2).map_or(0, |v| v >> 4));
    let name = |t: &[(u8, &'static str)], k: u8| t.iter().find(|(o, _)| *o == k).map(|(_, n)| *n);
    Some(match b.len() {
        2 => {
            let n = name(
                &[
                    (0x05, "balr"),
                    (0x0d, "basr"),
                    (0x12, "ltr"),
                    (0x14, "nr"),
                    (0x15, "clr"),
                    (0x16, "or"),
                    (0x17, "xr"),
                    (0x18, "lr"),
                    (0x19, "cr"),
                    (0x1a, "ar"),
                    (0x1b, "sr"),
                    (0x1e, "alr"),
                    (0x1f, "slr"),
                ],
                op,
            );
            match (op, n) {
                (0x07, _) if r1 == 15 => format!("br {}", r(r2)),
                (0x07, _) if r1 == 0 => "nopr".to_string(),
                (0x07, _) => format!("bcr {r1},{}", r(r2)),
                (_, Some(n)) => format!("{n} {},{}", r(r1), r(r2)),
                _ => return None,
            }
        }
        4 => match op {
            0xa7 => {
                let imm = i64::from(u16_at(2) as i16);
                match r2 {
                    0x4 => match r1 {
                        15 => format!("j {}", target(imm)),
                        0 => format!("jnop {}", target(imm)),
                        m => format!("jc {m},{}", target(imm)),
                    },
                    0x5 => format!("bras {},{}", r(r1), target(imm)),
                    0x6 => format!("brct {},{}", r(r1), target(imm)),
                    0x7 => format!("brctg {},{}", r(r1), target(imm)),
                    _ => {
                        let n = name(
                            &[
                                (0x0, "tmlh"),
                                (0x1, "tmll"),
                                (0x8, "lhi"),
                                (0x9, "lghi"),
                                (0xa, "ahi"),
                                (0xb, "aghi"),
                                (0xc, "mhi"),
                                (0xd, "mghi"),
                                (0xe, "chi"),
                                (0xf, "cghi"),
                            ],
                            r2,
                        )?;
                        format!("{n} {},{imm}", r(r1))
                    }
                }
            }
            0xb9 | 0xb2 => {
                let k = u16_at(0);
                let n = [
                    (0xb904, "lgr"),
                    (0xb902, "ltgr"),
                    (0xb906, "lgbr"),
                    (0xb907, "lghr"),
                    (0xb908, "agr"),
                    (0xb909, "sgr"),
                    (0xb90a, "algr"),
                    (0xb90b, "slgr"),
                    (0xb90c, "msgr"),
                    (0xb912, "ltgfr"),
                    (0xb914, "lgfr"),
                    (0xb916, "llgfr"),
                    (0xb920, "cgr"),
                    (0xb921, "clgr"),
                    (0xb926, "lbr"),
                    (0xb927, "lhr"),
                    (0xb980, "ngr"),
                    (0xb981, "ogr"),
                    (0xb982, "xgr"),
                    (0xb984, "llgcr"),
                    (0xb985, "llghr"),
                    (0xb994, "llcr"),
                    (0xb995, "llhr"),
                ]
                .iter()
                .find(|(o, _)| *o == k)
                .map(|(_, n)| *n)?;
                format!("{n} {},{}", r(b[3] >> 4), r(b[3] & 15))
            }
            0x88..=0x8b | 0x98 | 0x90 | 0xba => {
                let n = name(
                    &[
                        (0x88, "srl"),
                        (0x89, "sll"),
                        (0x8a, "sra"),
                        (0x8b, "sla"),
                        (0x98, "lm"),
                        (0x90, "stm"),
                        (0xba, "cs"),
                    ],
                    op,
                )?;
                format!("{n} {},{},{}", r(r1), r(r2), addr(disp12(), 0, b2))
            }
            0x91..=0x97 => {
                let n = name(
                    &[
                        (0x91, "tm"),
                        (0x92, "mvi"),
                        (0x94, "ni"),
                        (0x95, "cli"),
                        (0x96, "oi"),
                        (0x97, "xi"),
                    ],
                    op,
                )?;
                format!("{n} {},{}", addr(disp12(), 0, b2), b[1])
            }
            _ => {
                let n = name(
                    &[
                        (0x40, "sth"),
                        (0x41, "la"),
                        (0x42, "stc"),
                        (0x43, "ic"),
                        (0x47, "bc"),
                        (0x48, "lh"),
                        (0x50, "st"),
                        (0x54, "n"),
                        (0x55, "cl"),
                        (0x56, "o"),
                        (0x57, "x"),
                        (0x58, "l"),
                        (0x59, "c"),
                        (0x5a, "a"),
                        (0x5b, "s"),
                    ],
                    op,
                )?;
                format!("{n} {},{}", r(r1), addr(disp12(), x2, b2))
            }
        },
        6 => match op {
            0xc0 | 0xc2 | 0xc4 | 0xc6 => {
                let imm = be32(b, 2)?;
                match (op, r2) {
                    (0xc0, 0x0) => format!("larl {},{}", r(r1), target(imm)),
                    (0xc0, 0x4) => match r1 {
                        15 => format!("jg {}", target(imm)),
                        0 => format!("jgnop {}", target(imm)),
                        m => format!("jgc {m},{}", target(imm)),
                    },
                    (0xc0, 0x5) => format!("brasl {},{}", r(r1), target(imm)),
                    (0xc4, k) => {
                        let n = name(
                            &[
                                (0x2, "llhrl"),
                                (0x5, "lhrl"),
                                (0x6, "llghrl"),
                                (0x7, "sthrl"),
                                (0x8, "lgrl"),
                                (0xb, "stgrl"),
                                (0xc, "lgfrl"),
                                (0xd, "lrl"),
                                (0xe, "llgfrl"),
                                (0xf, "strl"),
                            ],
                            k,
                        )?;
                        format!("{n} {},{}", r(r1), target(imm))
                    }
                    (0xc6, k) => {
                        let n = name(
                            &[(0x8, "cgrl"), (0xa, "clgrl"), (0xd, "crl"), (0xf, "clrl")],
                            k,
                        )?;
                        format!("{n} {},{}", r(r1), target(imm))
                    }
                    (op, k) => {
                        let n = name(
                            &if op == 0xc0 {
                                [(0x1, "lgfi"), (0x9, "iilf"), (0xf, "llilf"), (0xb, "nilf")]
                            } else {
                                [(0xc, "cgfi"), (0xd, "cfi"), (0xe, "clgfi"), (0xf, "clfi")]
                            },
                            k,
                        )?;
                        format!("{n} {},{imm}", r(r1))
                    }
                }
            }
            0xe3 | 0xeb => {
                let k = b[5];
                let table: &[(u8, &'static str)] = if op == 0xe3 {
                    &[
                        (0x02, "ltg"),
                        (0x04, "lg"),
                        (0x08, "ag"),
                        (0x09, "sg"),
                        (0x0c, "msg"),
                        (0x12, "lt"),
                        (0x14, "lgf"),
                        (0x15, "lgh"),
                        (0x16, "llgf"),
                        (0x20, "cg"),
                        (0x21, "clg"),
                        (0x24, "stg"),
                        (0x50, "sty"),
                        (0x58, "ly"),
                        (0x70, "sthy"),
                        (0x71, "lay"),
                        (0x72, "stcy"),
                        (0x73, "icy"),
                        (0x77, "lgb"),
                        (0x80, "ng"),
                        (0x81, "og"),
                        (0x82, "xg"),
                        (0x90, "llgc"),
                        (0x91, "llgh"),
                        (0x94, "llc"),
                        (0x95, "llh"),
                    ]
                } else {
                    &[
                        (0x04, "lmg"),
                        (0x0a, "srag"),
                        (0x0b, "slag"),
                        (0x0c, "srlg"),
                        (0x0d, "sllg"),
                        (0x14, "csy"),
                        (0x24, "stmg"),
                        (0x30, "csg"),
                        (0xdc, "srak"),
                        (0xdd, "slak"),
                        (0xde, "srlk"),
                        (0xdf, "sllk"),
                    ]
                };
                let n = name(table, k)?;
                if op == 0xe3 {
                    format!("{n} {},{}", r(r1), addr(disp20(), x2, b2))
                } else {
                    format!("{n} {},{},{}", r(r1), r(r2), addr(disp20(), 0, b2))
                }
            }
            0xec => {
                let k = b[5];
                let ri = i64::from(u16_at(2) as i16);
                match k {
                    0x64 | 0x65 | 0x76 | 0x77 => {
                        let n = name(
                            &[
                                (0x64, "cgrj"),
                                (0x65, "clgrj"),
                                (0x76, "crj"),
                                (0x77, "clrj"),
                            ],
                            k,
                        )?;
                        format!("{n} {},{},{},{}", r(r1), r(r2), b[4] >> 4, target(ri))
                    }
                    0x7c..=0x7f => {
                        let n = name(
                            &[
                                (0x7c, "cgij"),
                                (0x7d, "clgij"),
                                (0x7e, "cij"),
                                (0x7f, "clij"),
                            ],
                            k,
                        )?;
                        format!("{n} {},{},{r2},{}", r(r1), b[4] as i8, target(ri))
                    }
                    0xd8 | 0xd9 => {
                        let n = if k == 0xd8 { "ahik" } else { "aghik" };
                        format!("{n} {},{},{}", r(r1), r(r2), u16_at(2) as i16)
                    }
                    0x55 | 0x51 | 0x5d | 0x54 => {
                        let n = name(
                            &[
                                (0x55, "risbg"),
                                (0x51, "risblg"),
                                (0x5d, "risbhg"),
                                (0x54, "rnsbg"),
                            ],
                            k,
                        )?;
                        format!("{n} {},{},{},{},{}", r(r1), r(r2), b[2], b[3], b[4])
                    }
                    _ => return None,
                }
            }
            0xd2 | 0xd4..=0xd7 => {
                let n = name(
                    &[
                        (0xd2, "mvc"),
                        (0xd4, "nc"),
                        (0xd5, "clc"),
                        (0xd6, "oc"),
                        (0xd7, "xc"),
                    ],
                    op,
                )?;
                let d1 = i64::from(u16_at(2) & 0xfff);
                let d2 = i64::from(u16_at(4) & 0xfff);
                format!(
                    "{n} {}({},{}),{}",
                    d1,
                    u32::from(b[1]) + 1,
                    r(b[2] >> 4),
                    addr(d2, 0, b[4] >> 4)
                )
            }
            0xe5 => {
                let k = b[1];
                let n = name(
                    &[
                        (0x44, "mvhhi"),
                        (0x48, "mvghi"),
                        (0x4c, "mvhi"),
                        (0x54, "chhsi"),
                        (0x58, "cghsi"),
                        (0x5c, "chsi"),
                    ],
                    k,
                )?;
                format!("{n} {},{}", addr(disp12(), 0, b2), u16_at(4) as i16)
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// The immediate a `lhi`/`lghi %rN,imm16` (RI: bytes 2-3) or `lgfi %rN,imm32` (RIL: bytes
/// 2-5) loads ([`Insn::imm`]); %r2-%r6 carry the integer arguments.
fn moved_immediate(b: &[u8]) -> Option<Immediate> {
    let (op, op2) = (*b.first()?, *b.get(1)?);
    let width = match (op, op2 & 0xf) {
        (0xa7, 0x8 | 0x9) => 2,
        (0xc0, 0x1) => 4,
        _ => return None,
    };
    let field = b.get(2..2 + width)?;
    let mut raw = [0u8; 8];
    raw[8 - width..].copy_from_slice(field);
    let shift = 64 - 8 * width as u32;
    let r = op2 >> 4;
    Some(Immediate {
        at: 2,
        width: width as u64,
        value: (i64::from_be_bytes(raw) << shift) >> shift,
        arg: (2..=6).contains(&r).then(|| r - 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_flow() {
        // brcl 0,0 (jgnop); brasl %r14,<field>; lgr %r2,%r3; br %r14; j -4 (brc 15)
        let code = [
            0xc0, 0x04, 0, 0, 0, 0, // 0
            0xc0, 0xe5, 0, 0, 0, 0, // 6
            0xb9, 0x04, 0x00, 0x23, // 12
            0x07, 0xfe, // 16
            0xa7, 0xf4, 0xff, 0xfe, // 18
        ];
        let map = S390x.decode(&code);
        assert_eq!(map.insns, [(0, 6), (6, 12), (12, 16), (16, 18), (18, 22)]);
        let mut out = Vec::new();
        S390x.decode_flow(&code, 0x100, &mut out);
        let got: Vec<(u64, Flow, u64, u64)> = out
            .iter()
            .map(|i| (i.start, i.flow, i.target, i.field))
            .collect();
        assert_eq!(
            got,
            [
                (0x100, Flow::Other, 0, 0),
                (0x106, Flow::Call, 0x106, 0x108),
                (0x10c, Flow::Other, 0, 0),
                (0x110, Flow::Other, 0, 0),
                (0x112, Flow::Jump, 0x10e, 0x114),
            ]
        );
        let calls: Vec<bool> = S390x.decode_insns(&code).iter().map(|i| i.call).collect();
        // brasl, and j (a direct unconditional jump, as on every machine).
        assert_eq!(calls, [false, true, false, false, true]);
        // lghi %r4,42 loads a line number.
        let m = S390x.decode_insns(&[0xa7, 0x49, 0, 42])[0].imm;
        assert_eq!(
            m.map(|m| (m.at, m.width, m.value, m.arg)),
            Some((2, 2, 42, Some(2)))
        );
        // lgfi %r1,-2: a 32-bit field, no argument register.
        let m = S390x.decode_insns(&[0xc0, 0x11, 0xff, 0xff, 0xff, 0xfe])[0].imm;
        assert_eq!(
            m.map(|m| (m.at, m.width, m.value, m.arg)),
            Some((2, 4, -2, None))
        );
    }

    #[test]
    fn dbl_fields_count_from_the_instruction() {
        let code = [0xc0, 0xe5, 0, 0, 0, 0];
        let map = S390x.decode(&code);
        assert_eq!(
            S390x.pcrel_bias(elf::R_390_PLT32DBL, 2, map.containing(2)),
            -2
        );
        assert_eq!(S390x.pcrel_bias(elf::R_390_PC32DBL, 2, None), -2);
        assert_eq!(S390x.pcrel_bias(elf::R_390_PC32, 2, None), 0);
        assert_eq!(S390x.pcrel_bias(elf::R_390_64, 0, None), 0);
    }

    #[test]
    fn disassembly() {
        let code = [
            0xc0, 0xe5, 0, 0, 0, 0, // brasl %r14,f
            0xe3, 0x10, 0xf0, 0xa0, 0x00, 0x04, // lg %r1,160(%r15)
            0xa7, 0x29, 0x00, 0x2a, // lghi %r2,42
            0xc0, 0xf4, 0, 0, 0, 0, // jg thunk
            0x01, 0x01, // not in the table
        ];
        let l = |t: &str| OperandLabel {
            pc_relative: true,
            text: t.into(),
        };
        let d = S390x.disassemble(&code, 0, &[l("printk")]).unwrap();
        assert_eq!((d.text.as_str(), d.labels_used), ("brasl %r14,printk", 1));
        assert_eq!(
            S390x.disassemble(&code, 6, &[]).unwrap().text,
            "lg %r1,160(%r15)"
        );
        assert_eq!(
            S390x.disassemble(&code, 12, &[]).unwrap().text,
            "lghi %r2,42"
        );
        let d = S390x
            .disassemble(&code, 16, &[l("__s390_indirect_jump_r14")])
            .unwrap();
        assert_eq!(d.text, "jg __s390_indirect_jump_r14");
        assert_eq!(
            S390x.disassemble(&code, 22, &[]).unwrap().text,
            ".insn 0101"
        );
        assert!(S390x.is_branch_thunk("__s390_indirect_jump_r14"));
    }
}
