//! loongarch64 (little-endian): relocation fields (bit fields of the 4-byte instruction word:
//! `B26`'s offset split over bits 0-9 and 10-25, the 20-bit `PCALA_HI20` of `pcalau12i` in
//! bits 5-24, the 12-bit `PCALA_LO12` in bits 10-21), the ftrace entry of
//! `-fpatchable-function-entry=2` (two nops at the function, recorded in
//! `__patchable_function_entries`, one such section per function with clang), ORC from the
//! kernel's objtool, and the special sections of the loongarch kernel.
//!
//! Objects come from clang (Debian 12 has no loongarch64 GNU cross toolchain). Decoding is
//! written here: instructions are 4 bytes and the branches the call graph follows are a few
//! opcodes. No maintained Rust crate decodes LoongArch; `klpgen explain`'s disassembly covers
//! the branches and common integer instructions and shows others as `.word`.

use std::collections::HashMap;

use object::elf;

use super::{
    Arch, CarvedCode, ConstLoad, Disassembly, Flow, FlowInsn, Immediate, Insn, InsnMap,
    OperandLabel, RelocKind, SpecialSection,
};

const SPECIAL_SECTIONS: &[SpecialSection] = &[
    special("__patchable_function_entries", Some(8), None),
    special("__bug_table", None, Some("bug_entry")),
    special("__ex_table", None, Some("exception_table_entry")),
    special("__jump_table", None, Some("jump_entry")),
    special(".altinstructions", None, Some("alt_instr")),
    special(".printk_index", Some(8), None),
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

/// Sections the kernel's objtool writes on loongarch (ORC, as on x86).
const OBJTOOL_SECTIONS: &[&str] = &[".orc_unwind", ".orc_unwind_ip", ".orc_header"];

/// The loongarch64 machine (`EM_LOONGARCH`, 64-bit).
#[derive(Debug)]
pub struct Loongarch64;

fn word(code: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let b = code.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((u64::from(v) << shift) as i64) >> shift
}

/// A direct branch: its flow and byte displacement.
fn branch(w: u32) -> Option<(Flow, i64)> {
    let op6 = w >> 26;
    let offs16 = || sext((w >> 10) & 0xffff, 16) * 4;
    match op6 {
        // b, bl: offs[15:0] in bits 10-25, offs[25:16] in bits 0-9.
        0x14 | 0x15 => {
            let offs = ((w & 0x3ff) << 16) | ((w >> 10) & 0xffff);
            let flow = if op6 == 0x15 { Flow::Call } else { Flow::Jump };
            Some((flow, sext(offs, 26) * 4))
        }
        // beqz, bnez, bceqz/bcnez: offs[20:16] in bits 0-4.
        0x10..=0x12 => {
            let offs = ((w & 0x1f) << 16) | ((w >> 10) & 0xffff);
            Some((Flow::CondJump, sext(offs, 21) * 4))
        }
        // beq, bne, blt, bge, bltu, bgeu.
        0x16..=0x1b => Some((Flow::CondJump, offs16())),
        _ => None,
    }
}

impl Arch for Loongarch64 {
    fn name(&self) -> &'static str {
        "loongarch64"
    }

    fn debian_arch(&self) -> &'static str {
        "loong64"
    }

    fn e_machine(&self) -> u16 {
        elf::EM_LOONGARCH
    }

    fn object_architecture(&self) -> object::Architecture {
        object::Architecture::LoongArch64
    }

    fn endianness(&self) -> object::Endianness {
        object::Endianness::Little
    }

    fn reloc(&self, r_type: u32) -> Option<RelocKind> {
        const HI20: u64 = 0x01ff_ffe0;
        const LO12: u64 = 0x003f_fc00;
        Some(match r_type {
            elf::R_LARCH_NONE | elf::R_LARCH_RELAX | elf::R_LARCH_ALIGN | elf::R_LARCH_MARK_LA => {
                RelocKind::bytes(0, false)
            }
            elf::R_LARCH_32 => RelocKind::bytes(4, false),
            elf::R_LARCH_64 => RelocKind::bytes(8, false),
            elf::R_LARCH_32_PCREL => RelocKind::bytes(4, true),
            elf::R_LARCH_64_PCREL => RelocKind::bytes(8, true),
            elf::R_LARCH_ADD8 | elf::R_LARCH_SUB8 => RelocKind::bytes(1, false),
            elf::R_LARCH_ADD16 | elf::R_LARCH_SUB16 => RelocKind::bytes(2, false),
            elf::R_LARCH_ADD32 | elf::R_LARCH_SUB32 => RelocKind::bytes(4, false),
            elf::R_LARCH_ADD64 | elf::R_LARCH_SUB64 => RelocKind::bytes(8, false),
            elf::R_LARCH_B16 => RelocKind::bits(4, true, 0x03ff_fc00),
            elf::R_LARCH_B21 => RelocKind::bits(4, true, 0x03ff_fc1f),
            elf::R_LARCH_B26 => RelocKind::bits(4, true, 0x03ff_ffff),
            elf::R_LARCH_PCALA_HI20 | elf::R_LARCH_GOT_PC_HI20 | elf::R_LARCH_PCREL20_S2 => {
                RelocKind::bits(4, true, HI20)
            }
            elf::R_LARCH_PCALA64_LO20 | elf::R_LARCH_GOT64_PC_LO20 => {
                RelocKind::bits(4, true, HI20)
            }
            elf::R_LARCH_PCALA64_HI12 | elf::R_LARCH_GOT64_PC_HI12 => {
                RelocKind::bits(4, true, LO12)
            }
            elf::R_LARCH_PCALA_LO12 | elf::R_LARCH_GOT_PC_LO12 => RelocKind::bits(4, false, LO12),
            elf::R_LARCH_ABS_HI20 | elf::R_LARCH_ABS64_LO20 => RelocKind::bits(4, false, HI20),
            elf::R_LARCH_ABS_LO12 | elf::R_LARCH_ABS64_HI12 => RelocKind::bits(4, false, LO12),
            _ => return None,
        })
    }

    fn reloc_name(&self, r_type: u32) -> Option<&'static str> {
        Some(match r_type {
            elf::R_LARCH_NONE => "R_LARCH_NONE",
            elf::R_LARCH_RELAX => "R_LARCH_RELAX",
            elf::R_LARCH_ALIGN => "R_LARCH_ALIGN",
            elf::R_LARCH_MARK_LA => "R_LARCH_MARK_LA",
            elf::R_LARCH_32 => "R_LARCH_32",
            elf::R_LARCH_64 => "R_LARCH_64",
            elf::R_LARCH_32_PCREL => "R_LARCH_32_PCREL",
            elf::R_LARCH_64_PCREL => "R_LARCH_64_PCREL",
            elf::R_LARCH_ADD8 => "R_LARCH_ADD8",
            elf::R_LARCH_SUB8 => "R_LARCH_SUB8",
            elf::R_LARCH_ADD16 => "R_LARCH_ADD16",
            elf::R_LARCH_SUB16 => "R_LARCH_SUB16",
            elf::R_LARCH_ADD32 => "R_LARCH_ADD32",
            elf::R_LARCH_SUB32 => "R_LARCH_SUB32",
            elf::R_LARCH_ADD64 => "R_LARCH_ADD64",
            elf::R_LARCH_SUB64 => "R_LARCH_SUB64",
            elf::R_LARCH_B16 => "R_LARCH_B16",
            elf::R_LARCH_B21 => "R_LARCH_B21",
            elf::R_LARCH_B26 => "R_LARCH_B26",
            elf::R_LARCH_PCALA_HI20 => "R_LARCH_PCALA_HI20",
            elf::R_LARCH_PCALA_LO12 => "R_LARCH_PCALA_LO12",
            elf::R_LARCH_PCALA64_LO20 => "R_LARCH_PCALA64_LO20",
            elf::R_LARCH_PCALA64_HI12 => "R_LARCH_PCALA64_HI12",
            elf::R_LARCH_GOT_PC_HI20 => "R_LARCH_GOT_PC_HI20",
            elf::R_LARCH_GOT_PC_LO12 => "R_LARCH_GOT_PC_LO12",
            elf::R_LARCH_GOT64_PC_LO20 => "R_LARCH_GOT64_PC_LO20",
            elf::R_LARCH_GOT64_PC_HI12 => "R_LARCH_GOT64_PC_HI12",
            elf::R_LARCH_PCREL20_S2 => "R_LARCH_PCREL20_S2",
            elf::R_LARCH_ABS_HI20 => "R_LARCH_ABS_HI20",
            elf::R_LARCH_ABS_LO12 => "R_LARCH_ABS_LO12",
            elf::R_LARCH_ABS64_LO20 => "R_LARCH_ABS64_LO20",
            elf::R_LARCH_ABS64_HI12 => "R_LARCH_ABS64_HI12",
            _ => return None,
        })
    }

    fn pcrel_bias(&self, _r_type: u32, _site: u64, _insn: Option<(u64, u64)>) -> i64 {
        // Fields count from their instruction (pcalau12i from its 4 KiB page), the site.
        0
    }

    fn pcrel_bias_reads_insn(&self, _r_type: u32) -> bool {
        false
    }

    fn decode(&self, code: &[u8]) -> InsnMap {
        let n = code.len() as u64;
        InsnMap {
            insns: (0..n).step_by(4).map(|s| (s, (s + 4).min(n))).collect(),
        }
    }

    fn decode_flow(&self, code: &[u8], base: u64, out: &mut Vec<FlowInsn>) {
        let n = code.len() as u64;
        for s in (0..n).step_by(4) {
            let start = base + s;
            let end = base + (s + 4).min(n);
            out.push(match word(code, s).and_then(branch) {
                Some((flow, disp)) => FlowInsn {
                    start,
                    end,
                    flow,
                    target: start.wrapping_add_signed(disp),
                    field: start,
                },
                None => FlowInsn {
                    start,
                    end,
                    flow: Flow::Other,
                    target: 0,
                    field: 0,
                },
            });
        }
    }

    fn decode_insns(&self, code: &[u8]) -> Vec<Insn> {
        let n = code.len() as u64;
        (0..n)
            .step_by(4)
            .map(|s| {
                let w = word(code, s).unwrap_or(0);
                // bl, or jirl with the return address into ra ($r1).
                let call = w >> 26 == 0x15 || (w >> 26 == 0x13 && w & 31 == 1);
                Insn {
                    start: s,
                    len: (s + 4).min(n) - s,
                    // bl, jirl $ra; and b (a tail call when a relocation sends it out).
                    call: call || w >> 26 == 0x14,
                    imm: moved_immediate(w),
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
        let Some(w) = word(code, offset) else {
            return Some(Disassembly {
                text: format!(".byte {:#04x}", code[at]),
                labels_used: 0,
            });
        };
        let pcrel = labels.iter().find(|l| l.pc_relative);
        let mut used = 0;
        let mut target = |disp: i64| match pcrel.filter(|_| disp == 0) {
            Some(l) => {
                used = 1;
                l.text.clone()
            }
            None => format!("{:#x}", (offset as i64).wrapping_add(disp)),
        };
        let reg = |n: u32| match n & 31 {
            0 => "$zero".to_string(),
            1 => "$ra".to_string(),
            3 => "$sp".to_string(),
            n @ 4..=11 => format!("$a{}", n - 4),
            n @ 12..=20 => format!("$t{}", n - 12),
            22 => "$fp".to_string(),
            n @ 23..=31 => format!("$s{}", n - 23),
            n => format!("$r{n}"),
        };
        let (rd, rj, rk) = (w & 31, (w >> 5) & 31, (w >> 10) & 31);
        let si12 = sext((w >> 10) & 0xfff, 12);
        let text = match (w >> 26, branch(w)) {
            (0x14, Some((_, d))) => format!("b {}", target(d)),
            (0x15, Some((_, d))) => format!("bl {}", target(d)),
            (0x10, Some((_, d))) => format!("beqz {}, {}", reg(rj), target(d)),
            (0x11, Some((_, d))) => format!("bnez {}, {}", reg(rj), target(d)),
            (op @ 0x16..=0x1b, Some((_, d))) => {
                let n = ["beq", "bne", "blt", "bge", "bltu", "bgeu"][(op - 0x16) as usize];
                format!("{n} {}, {}, {}", reg(rj), reg(rd), target(d))
            }
            (0x13, _) => format!(
                "jirl {}, {}, {}",
                reg(rd),
                reg(rj),
                sext((w >> 10) & 0xffff, 16) * 4
            ),
            _ if w == 0x0340_0000 => "nop".to_string(),
            _ => {
                let op10 = w >> 22;
                let rrr = w >> 15;
                match (op10, rrr) {
                    (0x00a, _) => format!("addi.w {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x00b, _) => format!("addi.d {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x00e, _) => format!("ori {}, {}, {:#x}", reg(rd), reg(rj), (w >> 10) & 0xfff),
                    (0x00d, _) => {
                        format!("andi {}, {}, {:#x}", reg(rd), reg(rj), (w >> 10) & 0xfff)
                    }
                    (0x0a0, _) => format!("ld.b {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a1, _) => format!("ld.h {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a2, _) => format!("ld.w {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a3, _) => format!("ld.d {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a4, _) => format!("st.b {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a5, _) => format!("st.h {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a6, _) => format!("st.w {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a7, _) => format!("st.d {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a8, _) => format!("ld.bu {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0a9, _) => format!("ld.hu {}, {}, {si12}", reg(rd), reg(rj)),
                    (0x0aa, _) => format!("ld.wu {}, {}, {si12}", reg(rd), reg(rj)),
                    (_, 0x20) => format!("add.w {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    (_, 0x21) => format!("add.d {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    (_, 0x22) => format!("sub.w {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    (_, 0x23) => format!("sub.d {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    (_, 0x29) => format!("and {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    (_, 0x2a) if rk == 0 => format!("move {}, {}", reg(rd), reg(rj)),
                    (_, 0x2a) => format!("or {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    (_, 0x2b) => format!("xor {}, {}, {}", reg(rd), reg(rj), reg(rk)),
                    _ if w >> 25 == 0x0d => {
                        format!("pcalau12i {}, {:#x}", reg(rd), (w >> 5) & 0xf_ffff)
                    }
                    _ if w >> 25 == 0x0a => {
                        format!("lu12i.w {}, {:#x}", reg(rd), (w >> 5) & 0xf_ffff)
                    }
                    _ => format!(".word {w:#010x}"),
                }
            }
        };
        Some(Disassembly {
            text,
            labels_used: used,
        })
    }

    fn fentry_symbol(&self) -> &'static str {
        "_mcount"
    }

    fn ftrace_site_sections(&self) -> &'static [&'static str] {
        &["__patchable_function_entries"]
    }

    fn fentry_window(&self) -> u64 {
        8
    }

    fn entry_pad_len(&self, _code: &[u8]) -> u64 {
        0
    }

    fn is_branch_thunk(&self, _name: &str) -> bool {
        false
    }

    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL_SECTIONS
    }

    fn objtool_sections(&self) -> &'static [&'static str] {
        OBJTOOL_SECTIONS
    }

    fn known_section_prefixes(&self) -> &'static [&'static str] {
        &[".orc_", ".altinstr_replacement"]
    }

    fn carved_code_sections(&self) -> &'static [CarvedCode] {
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
        // struct alt_instr { s32 instr_offset; s32 replace_offset; u16 feature; u8 instrlen;
        // u8 replacementlen; }: 12 bytes, `replacementlen` the last.
        (section == ".altinstructions" && field == 4 && entry.len() == 12)
            .then(|| entry.last().map(|&l| u64::from(l)))
            .flatten()
    }

    fn runtime_ptr_load(&self, _code: &[u8], site: u64) -> Result<ConstLoad, String> {
        Err(format!(
            "site {site:#x}: klpgen does not rewrite loongarch runtime constants"
        ))
    }

    fn syscall_stub_prefix(&self) -> &'static str {
        "sys_"
    }

    fn delayed_objtool_options(&self) -> &'static [&'static str] {
        &[]
    }

    fn kernel_config(&self) -> &'static str {
        "CONFIG_LOONGARCH"
    }

    fn kbuild_arch(&self) -> &'static str {
        "loongarch"
    }

    fn cross_compile(&self) -> &'static str {
        "loongarch64-linux-gnu-"
    }

    fn host_arch(&self) -> &'static str {
        "loongarch64"
    }

    fn pointer_reloc(&self) -> u32 {
        elf::R_LARCH_64
    }
}

/// The immediate `li.w` (`ori rd,$zero,ui12` or `addi.w rd,$zero,si12`) loads into an
/// argument register $a0-$a7 ($r4-$r11) ([`Insn::imm`]). Its field is bits 10-21: bytes 0-2
/// are given, the other bits in them pinned by what is required here (rd the argument
/// register the comparison matches, rj $zero, bits 22-31 the opcode).
fn moved_immediate(w: u32) -> Option<Immediate> {
    let signed = match w & 0xffc0_03e0 {
        0x0380_0000 => false,
        0x0280_0000 => true,
        _ => return None,
    };
    let rd = w & 31;
    let raw = (w >> 10) & 0xfff;
    let value = if signed {
        i64::from(((raw << 20) as i32) >> 20)
    } else {
        i64::from(raw)
    };
    (4..=11).contains(&rd).then(|| Immediate {
        at: 0,
        width: 3,
        value,
        arg: Some((rd - 4) as u8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn flow_and_disassembly() {
        // bl 0; b -4; beq $a0,$a1,+8; nop; jirl $zero,$ra,0
        let code = le(&[
            0x5400_0000,
            0x53ff_ffff,
            0x5800_0885,
            0x0340_0000,
            0x4c00_0020,
        ]);
        let mut out = Vec::new();
        Loongarch64.decode_flow(&code, 0x10, &mut out);
        let got: Vec<(Flow, u64)> = out.iter().map(|i| (i.flow, i.target)).collect();
        assert_eq!(
            got,
            [
                (Flow::Call, 0x10),
                (Flow::Jump, 0x10),
                (Flow::CondJump, 0x20),
                (Flow::Other, 0),
                (Flow::Other, 0),
            ]
        );
        let l = OperandLabel {
            pc_relative: true,
            text: "printk".into(),
        };
        let d = Loongarch64.disassemble(&code, 0, &[l]).unwrap();
        assert_eq!((d.text.as_str(), d.labels_used), ("bl printk", 1));
        assert_eq!(Loongarch64.disassemble(&code, 12, &[]).unwrap().text, "nop");
        // ori $a2,$zero,42: a line-number load.
        let i = Loongarch64.decode_insns(&le(&[0x0380_a806]));
        let m = i[0].imm.map(|m| (m.at, m.width, m.value, m.arg));
        assert_eq!(m, Some((0, 3, 42, Some(2))));
        // addi.w $a2,$zero,-1 is signed; the same into $t0 ($r12) is no argument: not given.
        let i = Loongarch64.decode_insns(&le(&[0x02bf_fc06, 0x02bf_fc0c]));
        assert_eq!(i[0].imm.map(|m| m.value), Some(-1));
        assert_eq!(i[1].imm, None);
        let b26 = Loongarch64.reloc(elf::R_LARCH_B26).unwrap();
        let mut f = 0x5412_3456u32.to_le_bytes();
        b26.clear(&mut f, object::Endianness::Little);
        assert_eq!(u32::from_le_bytes(f), 0x5400_0000);
    }
}
