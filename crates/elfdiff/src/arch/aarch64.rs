//! arm64 (AArch64, little-endian): relocation fields (bit fields of the 4-byte instruction
//! word: `CALL26` bits 0-25, the `ADRP` immediate split over bits 5-23 and 29-30, the 12-bit
//! `:lo12:` offsets in bits 10-21), the ftrace entry of `-fpatchable-function-entry=2` (two
//! nops at the function, recorded in `__patchable_function_entries`; with
//! `DYNAMIC_FTRACE_WITH_CALL_OPS` `=4,2`, two of them before the symbol), the special sections
//! of the arm64 kernel.
//!
//! Linux 6.12 cannot livepatch arm64 (no `HAVE_LIVEPATCH`): klpgen diffs its objects and
//! writes livepatch objects for them, but no kernel loads one yet.
//!
//! Decoding: the branches the call graph and the comparison read are fixed 4-byte words
//! decoded here (B, BL, B.cond, CBZ/CBNZ, TBZ/TBNZ, BLR); `klpgen explain`'s disassembly uses
//! yaxpeax-arm (pure Rust, maintained, the full A64 instruction set).

use std::collections::HashMap;

use object::elf;
use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::InstDecoder;

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

/// The arm64 machine (`EM_AARCH64`).
#[derive(Debug)]
pub struct Aarch64;

fn word(code: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let b = code.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((u64::from(v) << shift) as i64) >> shift
}

/// A direct branch: its flow and its byte displacement.
fn branch(w: u32) -> Option<(Flow, i64)> {
    if w & 0x7c00_0000 == 0x1400_0000 {
        // B (bit 31 clear), BL (set): imm26 words.
        let flow = if w & 0x8000_0000 != 0 {
            Flow::Call
        } else {
            Flow::Jump
        };
        return Some((flow, sext(w & 0x03ff_ffff, 26) * 4));
    }
    let imm19 = || sext((w >> 5) & 0x7_ffff, 19) * 4;
    if w & 0xff00_0010 == 0x5400_0000 {
        // B.cond; AL (0b1110) and NV branch always.
        let flow = if w & 0xe == 0xe {
            Flow::Jump
        } else {
            Flow::CondJump
        };
        return Some((flow, imm19()));
    }
    if w & 0x7e00_0000 == 0x3400_0000 {
        // CBZ, CBNZ.
        return Some((Flow::CondJump, imm19()));
    }
    if w & 0x7e00_0000 == 0x3600_0000 {
        // TBZ, TBNZ: imm14.
        return Some((Flow::CondJump, sext((w >> 5) & 0x3fff, 14) * 4));
    }
    None
}

impl Arch for Aarch64 {
    fn name(&self) -> &'static str {
        "arm64"
    }

    fn debian_arch(&self) -> &'static str {
        "arm64"
    }

    fn e_machine(&self) -> u16 {
        elf::EM_AARCH64
    }

    fn object_architecture(&self) -> object::Architecture {
        object::Architecture::Aarch64
    }

    fn endianness(&self) -> object::Endianness {
        object::Endianness::Little
    }

    fn reloc(&self, r_type: u32) -> Option<RelocKind> {
        const LO12: RelocKind = RelocKind::bits(4, false, 0x003f_fc00);
        const ADRP: RelocKind = RelocKind::bits(4, true, 0x60ff_ffe0);
        Some(match r_type {
            elf::R_AARCH64_NONE | 256 => RelocKind::bytes(0, false),
            elf::R_AARCH64_ABS64 => RelocKind::bytes(8, false),
            elf::R_AARCH64_ABS32 => RelocKind::bytes(4, false),
            elf::R_AARCH64_ABS16 => RelocKind::bytes(2, false),
            elf::R_AARCH64_PREL64 => RelocKind::bytes(8, true),
            elf::R_AARCH64_PREL32 => RelocKind::bytes(4, true),
            elf::R_AARCH64_PREL16 => RelocKind::bytes(2, true),
            elf::R_AARCH64_MOVW_UABS_G0
            | elf::R_AARCH64_MOVW_UABS_G0_NC
            | elf::R_AARCH64_MOVW_UABS_G1
            | elf::R_AARCH64_MOVW_UABS_G1_NC
            | elf::R_AARCH64_MOVW_UABS_G2
            | elf::R_AARCH64_MOVW_UABS_G2_NC
            | elf::R_AARCH64_MOVW_UABS_G3 => RelocKind::bits(4, false, 0x001f_ffe0),
            elf::R_AARCH64_LD_PREL_LO19 | elf::R_AARCH64_CONDBR19 => {
                RelocKind::bits(4, true, 0x00ff_ffe0)
            }
            elf::R_AARCH64_ADR_PREL_LO21
            | elf::R_AARCH64_ADR_PREL_PG_HI21
            | elf::R_AARCH64_ADR_PREL_PG_HI21_NC
            | elf::R_AARCH64_ADR_GOT_PAGE => ADRP,
            elf::R_AARCH64_ADD_ABS_LO12_NC
            | elf::R_AARCH64_LDST8_ABS_LO12_NC
            | elf::R_AARCH64_LDST16_ABS_LO12_NC
            | elf::R_AARCH64_LDST32_ABS_LO12_NC
            | elf::R_AARCH64_LDST64_ABS_LO12_NC
            | elf::R_AARCH64_LDST128_ABS_LO12_NC
            | elf::R_AARCH64_LD64_GOT_LO12_NC => LO12,
            elf::R_AARCH64_TSTBR14 => RelocKind::bits(4, true, 0x0007_ffe0),
            elf::R_AARCH64_JUMP26 | elf::R_AARCH64_CALL26 => RelocKind::bits(4, true, 0x03ff_ffff),
            _ => return None,
        })
    }

    fn reloc_name(&self, r_type: u32) -> Option<&'static str> {
        Some(match r_type {
            elf::R_AARCH64_NONE | 256 => "R_AARCH64_NONE",
            elf::R_AARCH64_ABS64 => "R_AARCH64_ABS64",
            elf::R_AARCH64_ABS32 => "R_AARCH64_ABS32",
            elf::R_AARCH64_ABS16 => "R_AARCH64_ABS16",
            elf::R_AARCH64_PREL64 => "R_AARCH64_PREL64",
            elf::R_AARCH64_PREL32 => "R_AARCH64_PREL32",
            elf::R_AARCH64_PREL16 => "R_AARCH64_PREL16",
            elf::R_AARCH64_MOVW_UABS_G0 => "R_AARCH64_MOVW_UABS_G0",
            elf::R_AARCH64_MOVW_UABS_G0_NC => "R_AARCH64_MOVW_UABS_G0_NC",
            elf::R_AARCH64_MOVW_UABS_G1 => "R_AARCH64_MOVW_UABS_G1",
            elf::R_AARCH64_MOVW_UABS_G1_NC => "R_AARCH64_MOVW_UABS_G1_NC",
            elf::R_AARCH64_MOVW_UABS_G2 => "R_AARCH64_MOVW_UABS_G2",
            elf::R_AARCH64_MOVW_UABS_G2_NC => "R_AARCH64_MOVW_UABS_G2_NC",
            elf::R_AARCH64_MOVW_UABS_G3 => "R_AARCH64_MOVW_UABS_G3",
            elf::R_AARCH64_LD_PREL_LO19 => "R_AARCH64_LD_PREL_LO19",
            elf::R_AARCH64_CONDBR19 => "R_AARCH64_CONDBR19",
            elf::R_AARCH64_ADR_PREL_LO21 => "R_AARCH64_ADR_PREL_LO21",
            elf::R_AARCH64_ADR_PREL_PG_HI21 => "R_AARCH64_ADR_PREL_PG_HI21",
            elf::R_AARCH64_ADR_PREL_PG_HI21_NC => "R_AARCH64_ADR_PREL_PG_HI21_NC",
            elf::R_AARCH64_ADR_GOT_PAGE => "R_AARCH64_ADR_GOT_PAGE",
            elf::R_AARCH64_ADD_ABS_LO12_NC => "R_AARCH64_ADD_ABS_LO12_NC",
            elf::R_AARCH64_LDST8_ABS_LO12_NC => "R_AARCH64_LDST8_ABS_LO12_NC",
            elf::R_AARCH64_LDST16_ABS_LO12_NC => "R_AARCH64_LDST16_ABS_LO12_NC",
            elf::R_AARCH64_LDST32_ABS_LO12_NC => "R_AARCH64_LDST32_ABS_LO12_NC",
            elf::R_AARCH64_LDST64_ABS_LO12_NC => "R_AARCH64_LDST64_ABS_LO12_NC",
            elf::R_AARCH64_LDST128_ABS_LO12_NC => "R_AARCH64_LDST128_ABS_LO12_NC",
            elf::R_AARCH64_LD64_GOT_LO12_NC => "R_AARCH64_LD64_GOT_LO12_NC",
            elf::R_AARCH64_TSTBR14 => "R_AARCH64_TSTBR14",
            elf::R_AARCH64_JUMP26 => "R_AARCH64_JUMP26",
            elf::R_AARCH64_CALL26 => "R_AARCH64_CALL26",
            _ => return None,
        })
    }

    fn pcrel_bias(&self, _r_type: u32, _site: u64, _insn: Option<(u64, u64)>) -> i64 {
        // Branch and ADR fields count from their instruction, which the site is (ADRP from
        // its 4 KiB page: the relocation's symbol and addend name the byte all the same).
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
            let insn = match word(code, s).and_then(branch) {
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
            };
            out.push(insn);
        }
    }

    fn decode_insns(&self, code: &[u8]) -> Vec<Insn> {
        let n = code.len() as u64;
        (0..n)
            .step_by(4)
            .map(|s| {
                let w = word(code, s).unwrap_or(0);
                // BL, BLR; and B (a tail call when a relocation sends it out).
                let call = w & 0x7c00_0000 == 0x1400_0000 || w & 0xffff_fc1f == 0xd63f_0000;
                Insn {
                    start: s,
                    len: (s + 4).min(n) - s,
                    call,
                    imm: moved_immediate(w),
                }
            })
            .collect()
    }

    fn disassemble(
        &self,
        code: &[u8],
        offset: u64,
        _labels: &[OperandLabel],
    ) -> Option<Disassembly> {
        let at = usize::try_from(offset).ok().filter(|&a| a < code.len())?;
        let bytes = &code[at..(at + 4).min(code.len())];
        let text = match InstDecoder::default().decode(&mut U8Reader::new(bytes)) {
            Ok(i) if bytes.len() == 4 => i.to_string(),
            _ => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!(".inst {}", hex.join(""))
            }
        };
        // Operands show as yaxpeax prints them; the relocations are named after the text.
        Some(Disassembly {
            text,
            labels_used: 0,
        })
    }

    fn is_mapping_symbol(&self, name: &str) -> bool {
        // `$x` (code), `$d` (data), optionally `.<n>`: the AArch64 ELF mapping symbols.
        matches!(name.split('.').next(), Some("$x" | "$d"))
    }

    fn fentry_symbol(&self) -> &'static str {
        "_mcount"
    }

    fn ftrace_site_sections(&self) -> &'static [&'static str] {
        &["__patchable_function_entries"]
    }

    fn fentry_window(&self) -> u64 {
        // `bti c` (with BTI), then the two nops.
        12
    }

    fn fentry_before(&self) -> u64 {
        // With DYNAMIC_FTRACE_WITH_CALL_OPS two of the nops precede the symbol.
        8
    }

    fn entry_pad_len(&self, code: &[u8]) -> u64 {
        // `bti c` / `bti jc`, a landing pad of BTI kernels.
        match word(code, 0) {
            Some(0xd503_245f | 0xd503_24df) => 4,
            _ => 0,
        }
    }

    fn is_branch_thunk(&self, _name: &str) -> bool {
        false
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
        // struct alt_instr { s32 orig_offset; s32 alt_offset; u16 cpucap; u8 orig_len;
        // u8 alt_len; }: 12 bytes, `alt_len` the last.
        (section == ".altinstructions" && field == 4 && entry.len() == 12)
            .then(|| entry.last().map(|&l| u64::from(l)))
            .flatten()
    }

    fn runtime_ptr_load(&self, _code: &[u8], site: u64) -> Result<ConstLoad, String> {
        Err(format!(
            "site {site:#x}: klpgen does not rewrite arm64 runtime constants"
        ))
    }

    fn syscall_stub_prefix(&self) -> &'static str {
        "__arm64_sys_"
    }

    fn delayed_objtool_options(&self) -> &'static [&'static str] {
        &[]
    }

    fn kernel_config(&self) -> &'static str {
        "CONFIG_ARM64"
    }

    fn kbuild_arch(&self) -> &'static str {
        "arm64"
    }

    fn cross_compile(&self) -> &'static str {
        "aarch64-linux-gnu-"
    }

    fn host_arch(&self) -> &'static str {
        "aarch64"
    }

    fn pointer_reloc(&self) -> u32 {
        elf::R_AARCH64_ABS64
    }
}

/// The immediate `mov wN,#imm16` (MOVZ, 32-bit, no shift) loads into an argument register
/// w0-w7 ([`Insn::imm`]). Its field is bits 5-20, not whole bytes: bytes 0-2 are given, and
/// the other bits in them are pinned by what is required here (Rd is the argument register
/// the comparison matches, hw is 0, bits 21-31 the MOVZ opcode in byte 3 and bits 21-23).
fn moved_immediate(w: u32) -> Option<Immediate> {
    if w & 0xffe0_0000 != 0x5280_0000 {
        return None;
    }
    let rd = w & 31;
    (rd < 8).then(|| Immediate {
        at: 0,
        width: 3,
        value: i64::from((w >> 5) & 0xffff),
        arg: Some(rd as u8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn flow() {
        // bl .; b .-4; b.ne .+8; cbz x0,.+4; ret
        let code = le(&[
            0x9400_0000,
            0x17ff_ffff,
            0x5400_0041,
            0xb400_0020,
            0xd65f_03c0,
        ]);
        let mut out = Vec::new();
        Aarch64.decode_flow(&code, 0, &mut out);
        let got: Vec<(Flow, u64)> = out.iter().map(|i| (i.flow, i.target)).collect();
        assert_eq!(
            got,
            [
                (Flow::Call, 0),
                (Flow::Jump, 0),
                (Flow::CondJump, 0x10),
                (Flow::CondJump, 0x10),
                (Flow::Other, 0),
            ]
        );
        let i = Aarch64.decode_insns(&le(&[0x5280_0542, 0x9400_0000]));
        let m = i[0].imm.map(|m| (m.at, m.width, m.value, m.arg));
        assert_eq!((m, i[1].call), (Some((0, 3, 42, Some(2))), true));
        // Into w9 (no argument register) or shifted (hw 1): not given.
        let i = Aarch64.decode_insns(&le(&[0x5280_0549, 0x52a0_0542]));
        assert_eq!((i[0].imm, i[1].imm), (None, None));
    }

    #[test]
    fn call26_keeps_its_opcode() {
        let k = Aarch64.reloc(elf::R_AARCH64_CALL26).unwrap();
        let mut bl = 0x9400_1234u32.to_le_bytes();
        k.clear(&mut bl, object::Endianness::Little);
        assert_eq!(u32::from_le_bytes(bl), 0x9400_0000);
        let mut b = 0x1400_1234u32.to_le_bytes();
        k.clear(&mut b, object::Endianness::Little);
        assert_ne!(b, bl);
        let d = Aarch64.disassemble(&le(&[0xd65f_03c0]), 0, &[]).unwrap();
        assert_eq!(d.text, "ret");
    }
}
