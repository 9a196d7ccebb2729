//! ppc64le (64-bit little-endian PowerPC, ELFv2 ABI): relocation fields (bit fields of the
//! 4-byte instruction word: `REL24` bits 2-25 between the opcode and the AA/LK bits, half16
//! fields of D-form instructions, the DS form's low two bits kept), the `-mprofile-kernel`
//! ftrace entry (`mflr r0; bl _mcount` after the local entry point, or the nops of
//! `-fpatchable-function-entry` with a newer GCC), the special sections of the powerpc kernel
//! (feature fixups with their alternative code, `__ex_table`, `__bug_table`, jump labels), the
//! `.toc` of address slots, and what a module's code must look like to run from a module.
//!
//! Decoding: instructions are 4 bytes, so boundaries need no decoder, and the few forms the
//! differ reads (branches for the call graph, `li` for the line-number tolerance) are a shift
//! and a mask each, written here. `klpgen explain`'s disassembly uses the `powerpc` crate
//! (encounter/powerpc-rs: pure Rust, PowerPC 64-bit, simplified mnemonics as objdump prints
//! them); an instruction it does not know (some POWER7+ ones) shows as `.long`.
//!
//! A module reaches the kernel through stubs the loader builds (`arch/powerpc/kernel/
//! module_64.c`): the stub saves the module's TOC pointer (r2) at 24(r1), and the loader
//! rewrites the `nop` GCC leaves after every call to another unit into `ld r2,24(r1)`. A call
//! to a function of the same unit is a bare `bl` (same TOC assumed) and a tail call a `b`:
//! neither may reach the kernel from a module ([`Arch::branch_needs_local_target`]; the plan
//! carries such callees). `.TOC.` is the module's own TOC, which the loader supplies, and the
//! `_savegpr0_N`/`_restgpr0_N` helpers of `-Os` code come from the module link
//! (`--save-restore-funcs`): both stay ordinary references. Code built for vmlinux
//! (`-mcmodel=medium`) addresses the unit's data TOC-relative (`addis rX,r2,sym@toc@ha` and a
//! `@toc@l` use), which from a module counts from the module's TOC and cannot reach the
//! kernel's data: the plan turns such a pair into a load of the address from a `.toc` slot
//! ([`Arch::rewrite_far_reference`]).

use std::collections::HashMap;

use object::elf;
use powerpc::{Argument, Extension, Extensions, Ins};

use super::{
    Arch, CarvedCode, ConstLoad, Disassembly, FarRef, Flow, FlowInsn, Immediate, Insn, InsnMap,
    OperandLabel, RelocKind, SpecialSection,
};

/// Relocation types newer than the `object` crate's list.
const R_PPC64_REL24_NOTOC: u32 = 116;
const R_PPC64_ADDR64_LOCAL: u32 = 117;
const R_PPC64_ENTRY: u32 = 118;
const R_PPC64_PLTSEQ: u32 = 119;
const R_PPC64_PLTCALL: u32 = 120;

/// `nop` (`ori r0,r0,0`) and `ld r2,24(r1)`: what the loader accepts after a call through a
/// stub (the second when the relocation was applied before, a module loaded again).
const NOP: u32 = 0x6000_0000;
const LD_R2_24_R1: u32 = 0xe841_0018;

const SPECIAL_SECTIONS: &[SpecialSection] = &[
    special("__mcount_loc", Some(8), None),
    // gcc 13+ with -fpatchable-function-entry (ARCH_USING_PATCHABLE_FUNCTION_ENTRY).
    special("__patchable_function_entries", Some(8), None),
    special("__bug_table", None, Some("bug_entry")),
    special("__ex_table", None, Some("exception_table_entry")),
    special("__jump_table", None, Some("jump_entry")),
    special(".printk_index", Some(8), None),
    // struct fixup_entry { u64 mask, value; long start_off, end_off, alt_start_off,
    // alt_end_off; }: offsets relative to the entry, to the code and its alternative.
    special("__ftr_fixup", Some(48), None),
    special("__mmu_ftr_fixup", Some(48), None),
    special("__fw_ftr_fixup", Some(48), None),
    // One self-relative offset to the instruction each.
    special("__lwsync_fixup", Some(8), None),
    special("__barrier_nospec_fixup", Some(8), None),
];

/// The TOC's address slots: data, never run.
const TOC: CarvedCode = CarvedCode {
    name: ".toc",
    in_place: false,
};

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

/// The ppc64le machine (`EM_PPC64`, little-endian, ELFv2).
#[derive(Debug)]
pub struct Ppc64le;

/// The instruction word at `at` of `code`.
fn word(code: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let b = code.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn put_word(code: &mut [u8], at: u64, w: u32) -> Option<()> {
    let at = usize::try_from(at).ok()?;
    code.get_mut(at..at.checked_add(4)?)?
        .copy_from_slice(&w.to_le_bytes());
    Some(())
}

fn opcode(w: u32) -> u32 {
    w >> 26
}

/// Sign-extend the low `bits` bits of `v`.
fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((u64::from(v) << shift) as i64) >> shift
}

/// D-form loads and stores (`lwz rT,d(rA)` ...) and `addi`: their base register and whether
/// the displacement is a DS field (low two bits part of the opcode).
fn d_form_base(w: u32) -> Option<(u32, bool)> {
    let ra = (w >> 16) & 31;
    match opcode(w) {
        // addi, lwz, lwzu, lbz, lbzu, stw, stwu, stb, stbu, lhz, lhzu, lha, lhau, sth,
        // sthu, lmw, stmw, lfs, lfsu, lfd, lfdu, stfs, stfsu, stfd, stfdu.
        14 | 32..=55 => Some((ra, false)),
        // ld/ldu/lwa, std/stdu.
        58 | 62 => Some((ra, true)),
        _ => None,
    }
}

impl Arch for Ppc64le {
    fn name(&self) -> &'static str {
        "ppc64le"
    }

    fn debian_arch(&self) -> &'static str {
        "ppc64el"
    }

    fn e_machine(&self) -> u16 {
        elf::EM_PPC64
    }

    fn object_architecture(&self) -> object::Architecture {
        object::Architecture::PowerPc64
    }

    fn endianness(&self) -> object::Endianness {
        object::Endianness::Little
    }

    fn check_header(&self, endian: object::Endianness, e_flags: u32) -> Result<(), String> {
        if endian != object::Endianness::Little {
            return Err(
                "big-endian ppc64 object: klpgen supports ppc64le (little-endian, ELFv2) only"
                    .into(),
            );
        }
        match e_flags & elf::EF_PPC64_ABI {
            // 0: no ABI marked (hand-written assembly), read as ELFv2.
            0 | 2 => Ok(()),
            v => Err(format!(
                "ppc64 object of ELF ABI version {v} (e_flags {e_flags:#x}): klpgen supports the ELFv2 ABI only"
            )),
        }
    }

    fn reloc(&self, r_type: u32) -> Option<RelocKind> {
        const HALF: RelocKind = RelocKind::bytes(2, false);
        const HALF_DS: RelocKind = RelocKind::bits(2, false, 0xfffc);
        const MARKER: RelocKind = RelocKind::bytes(0, false);
        Some(match r_type {
            elf::R_PPC64_NONE => MARKER,
            R_PPC64_ENTRY | elf::R_PPC64_TOCSAVE | R_PPC64_PLTSEQ | R_PPC64_PLTCALL => MARKER,
            elf::R_PPC64_ADDR32 | elf::R_PPC64_UADDR32 => RelocKind::bytes(4, false),
            elf::R_PPC64_ADDR64 | elf::R_PPC64_UADDR64 | R_PPC64_ADDR64_LOCAL => {
                RelocKind::bytes(8, false)
            }
            elf::R_PPC64_TOC => RelocKind::bytes(8, false),
            elf::R_PPC64_ADDR16
            | elf::R_PPC64_ADDR16_LO
            | elf::R_PPC64_ADDR16_HI
            | elf::R_PPC64_ADDR16_HA
            | elf::R_PPC64_ADDR16_HIGHER
            | elf::R_PPC64_ADDR16_HIGHERA
            | elf::R_PPC64_ADDR16_HIGHEST
            | elf::R_PPC64_ADDR16_HIGHESTA
            | elf::R_PPC64_UADDR16 => HALF,
            elf::R_PPC64_ADDR16_DS | elf::R_PPC64_ADDR16_LO_DS => HALF_DS,
            elf::R_PPC64_TOC16
            | elf::R_PPC64_TOC16_LO
            | elf::R_PPC64_TOC16_HI
            | elf::R_PPC64_TOC16_HA => HALF,
            elf::R_PPC64_TOC16_DS | elf::R_PPC64_TOC16_LO_DS => HALF_DS,
            // The 24-bit word displacement of `b`/`bl` (bits 2-25), the 14-bit one of `bc`.
            elf::R_PPC64_REL24 | R_PPC64_REL24_NOTOC => RelocKind::bits(4, true, 0x03ff_fffc),
            elf::R_PPC64_REL14 | elf::R_PPC64_REL14_BRTAKEN | elf::R_PPC64_REL14_BRNTAKEN => {
                RelocKind::bits(4, true, 0xfffc)
            }
            elf::R_PPC64_REL32 => RelocKind::bytes(4, true),
            elf::R_PPC64_REL64 => RelocKind::bytes(8, true),
            elf::R_PPC64_REL16
            | elf::R_PPC64_REL16_LO
            | elf::R_PPC64_REL16_HI
            | elf::R_PPC64_REL16_HA => RelocKind::bytes(2, true),
            _ => return None,
        })
    }

    fn reloc_name(&self, r_type: u32) -> Option<&'static str> {
        Some(match r_type {
            elf::R_PPC64_NONE => "R_PPC64_NONE",
            elf::R_PPC64_ADDR32 => "R_PPC64_ADDR32",
            elf::R_PPC64_UADDR32 => "R_PPC64_UADDR32",
            elf::R_PPC64_ADDR64 => "R_PPC64_ADDR64",
            elf::R_PPC64_UADDR64 => "R_PPC64_UADDR64",
            R_PPC64_ADDR64_LOCAL => "R_PPC64_ADDR64_LOCAL",
            elf::R_PPC64_TOC => "R_PPC64_TOC",
            elf::R_PPC64_ADDR16 => "R_PPC64_ADDR16",
            elf::R_PPC64_ADDR16_LO => "R_PPC64_ADDR16_LO",
            elf::R_PPC64_ADDR16_HI => "R_PPC64_ADDR16_HI",
            elf::R_PPC64_ADDR16_HA => "R_PPC64_ADDR16_HA",
            elf::R_PPC64_ADDR16_HIGHER => "R_PPC64_ADDR16_HIGHER",
            elf::R_PPC64_ADDR16_HIGHERA => "R_PPC64_ADDR16_HIGHERA",
            elf::R_PPC64_ADDR16_HIGHEST => "R_PPC64_ADDR16_HIGHEST",
            elf::R_PPC64_ADDR16_HIGHESTA => "R_PPC64_ADDR16_HIGHESTA",
            elf::R_PPC64_UADDR16 => "R_PPC64_UADDR16",
            elf::R_PPC64_ADDR16_DS => "R_PPC64_ADDR16_DS",
            elf::R_PPC64_ADDR16_LO_DS => "R_PPC64_ADDR16_LO_DS",
            elf::R_PPC64_TOC16 => "R_PPC64_TOC16",
            elf::R_PPC64_TOC16_LO => "R_PPC64_TOC16_LO",
            elf::R_PPC64_TOC16_HI => "R_PPC64_TOC16_HI",
            elf::R_PPC64_TOC16_HA => "R_PPC64_TOC16_HA",
            elf::R_PPC64_TOC16_DS => "R_PPC64_TOC16_DS",
            elf::R_PPC64_TOC16_LO_DS => "R_PPC64_TOC16_LO_DS",
            elf::R_PPC64_REL24 => "R_PPC64_REL24",
            R_PPC64_REL24_NOTOC => "R_PPC64_REL24_NOTOC",
            elf::R_PPC64_REL14 => "R_PPC64_REL14",
            elf::R_PPC64_REL14_BRTAKEN => "R_PPC64_REL14_BRTAKEN",
            elf::R_PPC64_REL14_BRNTAKEN => "R_PPC64_REL14_BRNTAKEN",
            elf::R_PPC64_REL32 => "R_PPC64_REL32",
            elf::R_PPC64_REL64 => "R_PPC64_REL64",
            elf::R_PPC64_REL16 => "R_PPC64_REL16",
            elf::R_PPC64_REL16_LO => "R_PPC64_REL16_LO",
            elf::R_PPC64_REL16_HI => "R_PPC64_REL16_HI",
            elf::R_PPC64_REL16_HA => "R_PPC64_REL16_HA",
            R_PPC64_ENTRY => "R_PPC64_ENTRY",
            elf::R_PPC64_TOCSAVE => "R_PPC64_TOCSAVE",
            R_PPC64_PLTSEQ => "R_PPC64_PLTSEQ",
            R_PPC64_PLTCALL => "R_PPC64_PLTCALL",
            _ => return None,
        })
    }

    fn pcrel_bias(&self, _r_type: u32, _site: u64, _insn: Option<(u64, u64)>) -> i64 {
        // Branch fields count from the instruction, whose first byte the relocation's site
        // is (the whole word, little-endian); PC-relative data fields from themselves.
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
            let other = FlowInsn {
                start,
                end,
                flow: Flow::Other,
                target: 0,
                field: 0,
            };
            let Some(w) = word(code, s) else {
                out.push(other);
                continue;
            };
            let (aa, lk) = (w & 2 != 0, w & 1 != 0);
            let insn = match opcode(w) {
                // b, bl: LI (bits 2-25) words.
                18 if !aa => FlowInsn {
                    flow: if lk { Flow::Call } else { Flow::Jump },
                    target: start.wrapping_add_signed(sext(w & 0x03ff_fffc, 26)),
                    field: start,
                    ..other
                },
                // bc: BD (bits 2-15). `bcl` (LK) reads the PC or calls conditionally: other.
                16 if !aa && !lk => {
                    let bo = (w >> 21) & 31;
                    // BO 1z1zz: branch always.
                    let always = bo & 0x14 == 0x14;
                    FlowInsn {
                        flow: if always { Flow::Jump } else { Flow::CondJump },
                        target: start.wrapping_add_signed(sext(w & 0xfffc, 16)),
                        field: start,
                        ..other
                    }
                }
                _ => other,
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
                let call = match opcode(w) {
                    // bl, bcl; and b (a tail call when a relocation sends it out).
                    18 => w & 1 != 0 || w & 2 == 0,
                    16 => w & 1 != 0,
                    // bclrl, bcctrl (XL-form, extended opcodes 16 and 528) with LK.
                    19 => w & 1 != 0 && matches!((w >> 1) & 0x3ff, 16 | 528),
                    _ => false,
                };
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
        labels: &[OperandLabel],
    ) -> Option<Disassembly> {
        if offset >= code.len() as u64 {
            return None;
        }
        let Some(w) = word(code, offset) else {
            let at = usize::try_from(offset).ok()?;
            let bytes: Vec<String> = code[at..].iter().map(|b| format!("{b:#04x}")).collect();
            return Some(Disassembly {
                text: format!(".byte {}", bytes.join(", ")),
                labels_used: 0,
            });
        };
        let ins = Ins::new(w, Extensions::from_extension(Extension::Ppc64));
        let parsed = ins.simplified();
        if parsed.mnemonic.starts_with('<') {
            return Some(Disassembly {
                text: format!(".long {w:#010x}"),
                labels_used: 0,
            });
        }
        let mut used = vec![false; labels.len()];
        // A relocated field reads as 0: a branch to itself (PC-relative) or a zero immediate.
        let mut label_for = |pcrel: bool| {
            let i = (0..labels.len()).find(|&i| !used[i] && labels[i].pc_relative == pcrel)?;
            used[i] = true;
            Some(labels[i].text.clone())
        };
        let mut text = parsed.mnemonic.to_string();
        let mut in_offset = false;
        for (i, arg) in parsed.args_iter().enumerate() {
            if i == 0 {
                text.push(' ');
            } else if !in_offset {
                text.push_str(", ");
            }
            let shown = match arg {
                Argument::BranchDest(d) if d.0 == 0 => label_for(true),
                Argument::Simm(v) if v.0 == 0 => label_for(false),
                Argument::Uimm(v) if v.0 == 0 => label_for(false),
                Argument::Offset(v) if v.0 == 0 => label_for(false),
                _ => None,
            };
            match shown {
                Some(l) => text.push_str(&l),
                None => text.push_str(&arg.to_string()),
            }
            if let Argument::Offset(_) = arg {
                text.push('(');
                in_offset = true;
            } else if in_offset {
                text.push(')');
                in_offset = false;
            }
        }
        Some(Disassembly {
            text,
            labels_used: used.iter().filter(|&&u| u).count(),
        })
    }

    fn fentry_symbol(&self) -> &'static str {
        "_mcount"
    }

    fn ftrace_site_sections(&self) -> &'static [&'static str] {
        &["__mcount_loc", "__patchable_function_entries"]
    }

    fn fentry_window(&self) -> u64 {
        // The global entry (two instructions setting up r2), `mflr r0`, then `bl _mcount` at
        // +0xc; without a TOC set-up at +4.
        16
    }

    fn entry_pad_len(&self, code: &[u8]) -> u64 {
        // A call within the unit enters at the local entry point, past the global entry's
        // r2 set-up: `addis r2,r12,.TOC.-f@ha; addi r2,r2,.TOC.-f@l`, or in the large model
        // `ld r2,-8(r12); add r2,r2,r12`.
        match (word(code, 0), word(code, 4)) {
            (Some(a), Some(b))
                if (a & 0xffff_0000 == 0x3c4c_0000 && b & 0xffff_0000 == 0x3842_0000)
                    || (a == 0xe84c_fff8 && b == 0x7c42_6214) =>
            {
                8
            }
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
        // objtool only writes __mcount_loc on powerpc, and kbuild runs it per object.
        &[]
    }

    fn known_section_prefixes(&self) -> &'static [&'static str] {
        // The TOC's address slots (copied per entry) and the feature fixups' alternative code.
        &[".toc", "__ftr_alt_", ".stubs", ".sfpr"]
    }

    fn carved_code_sections(&self) -> &'static [CarvedCode] {
        // `.toc`: one 8-byte address slot per object the code loads a pointer to, each
        // reached from the instructions loading it. The feature fixups' alternatives
        // (`__ftr_alt_<n>`) are copied piece by piece too, by their prefix
        // (`carved_code`).
        &[TOC]
    }

    fn carved_code(&self, name: &str) -> Option<CarvedCode> {
        // A feature fixup's alternative is copied over the original instructions at boot
        // (`patch_feature_section`), never run where it lies.
        match name {
            ".toc" => Some(TOC),
            _ if name.starts_with("__ftr_alt_") => Some(CarvedCode {
                name: "__ftr_alt_",
                in_place: false,
            }),
            _ => None,
        }
    }

    fn falls_through(&self, code: &[u8]) -> bool {
        super::falls_through_by_flow(self, code)
    }

    fn entry_reference_len(
        &self,
        _section: &str,
        _entry: &[u8],
        _field: u64,
        _members: &HashMap<String, u64>,
    ) -> Option<u64> {
        None
    }

    fn entry_field_bias(&self, section: &str, field: u64) -> i64 {
        // fixup_entry's four offsets are `label - <entry start>` (FTR_ENTRY_OFFSET), written
        // as REL64 at their fields: the target is the addend less the field's place.
        match section {
            "__ftr_fixup" | "__mmu_ftr_fixup" | "__fw_ftr_fixup" if field >= 16 => -(field as i64),
            _ => 0,
        }
    }

    fn runtime_ptr_load(&self, _code: &[u8], site: u64) -> Result<ConstLoad, String> {
        Err(format!(
            "site {site:#x}: powerpc has no runtime constants in Linux 6.12; klpgen does not know their layout"
        ))
    }

    fn syscall_stub_prefix(&self) -> &'static str {
        "sys_"
    }

    fn delayed_objtool_options(&self) -> &'static [&'static str] {
        &[]
    }

    fn kernel_config(&self) -> &'static str {
        "CONFIG_PPC64"
    }

    fn kbuild_arch(&self) -> &'static str {
        "powerpc"
    }

    fn cross_compile(&self) -> &'static str {
        "powerpc64le-linux-gnu-"
    }

    fn host_arch(&self) -> &'static str {
        "powerpc64"
    }

    fn rust_unsupported(&self) -> Option<&'static str> {
        Some("the kernel's Rust support does not cover powerpc in Linux 6.12 (x86-64, arm64, loongarch and riscv only)")
    }

    fn module_provided(&self, name: &str) -> bool {
        // The loader sets `.TOC.` to the module's TOC; `ld --save-restore-funcs`
        // (KBUILD_LDFLAGS_MODULE) adds the out-of-line register save and restore helpers.
        name == ".TOC."
            || [
                "_savegpr", "_restgpr", "_savefpr", "_restfpr", "_savevr_", "_restvr_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
    }

    fn branch_needs_local_target(&self, code: &[u8], site: u64, r_type: u32) -> bool {
        if !matches!(r_type, elf::R_PPC64_REL24 | R_PPC64_REL24_NOTOC) {
            return false;
        }
        let Some(w) = word(code, site) else {
            return false;
        };
        if opcode(w) != 18 {
            return false;
        }
        // A tail call (`b`) through a stub would return to the module's caller with the
        // kernel's TOC pointer; a call needs the nop the loader turns into the TOC restore.
        w & 1 == 0 || !matches!(word(code, site + 4), Some(NOP | LD_R2_24_R1))
    }

    fn slot_section(&self) -> Option<&'static str> {
        Some(".toc")
    }

    fn far_reference(&self, r_type: u32) -> Option<FarRef> {
        match r_type {
            elf::R_PPC64_TOC16_HA => Some(FarRef::High),
            elf::R_PPC64_TOC16_LO | elf::R_PPC64_TOC16_LO_DS => Some(FarRef::Low),
            _ => None,
        }
    }

    fn far_reference_register(&self, code: &[u8], at: u64, part: FarRef) -> Option<u32> {
        let w = word(code, at)?;
        match part {
            // addis rX,r2,...
            FarRef::High => (opcode(w) == 15 && (w >> 16) & 31 == 2).then_some((w >> 21) & 31),
            FarRef::Low => d_form_base(w).map(|(ra, _)| ra),
        }
    }

    fn rewrite_far_reference(
        &self,
        code: &mut [u8],
        high: u64,
        lows: &[(u64, i64)],
    ) -> Result<u32, String> {
        let reg = self
            .far_reference_register(code, high, FarRef::High)
            .ok_or_else(|| {
                format!("the instruction at {high:#x} is not `addis rX,r2,sym@toc@ha`")
            })?;
        let mut new_lows = Vec::with_capacity(lows.len());
        for &(at, delta) in lows {
            let w = word(code, at).ok_or_else(|| format!("no instruction at {at:#x}"))?;
            let (ra, ds) = d_form_base(w).ok_or_else(|| {
                format!("the instruction {w:#010x} at {at:#x} is not a D-form use of the address")
            })?;
            if ra != reg {
                return Err(format!(
                    "the instruction at {at:#x} counts from r{ra}, not from r{reg} that the `addis` at {high:#x} set"
                ));
            }
            let fits = i16::try_from(delta).is_ok() && (!ds || delta % 4 == 0);
            if !fits {
                return Err(format!(
                    "the offset {delta} from the address at {at:#x} does not fit the instruction's displacement"
                ));
            }
            let keep = if ds { 0xffff_0003 } else { 0xffff_0000 };
            new_lows.push((
                at,
                (w & keep) | (delta as u32 & 0xffff & !(if ds { 3 } else { 0 })),
            ));
        }
        // `ld rX,slot@toc(r2)`: DS-form, opcode 58, XO 0.
        put_word(code, high, 0xe800_0000 | (reg << 21) | (2 << 16))
            .ok_or_else(|| format!("no instruction at {high:#x}"))?;
        for (at, w) in new_lows {
            put_word(code, at, w).ok_or_else(|| format!("no instruction at {at:#x}"))?;
        }
        Ok(elf::R_PPC64_TOC16_DS)
    }

    fn pointer_reloc(&self) -> u32 {
        elf::R_PPC64_ADDR64
    }
}

/// The immediate `li rN,imm` (`addi rN,0,imm`) loads ([`Insn::imm`]): the SI field, the low
/// half-word (bytes 0-1 of the little-endian word); r3-r10 carry the integer arguments.
fn moved_immediate(w: u32) -> Option<Immediate> {
    if opcode(w) != 14 || (w >> 16) & 31 != 0 {
        return None;
    }
    let rt = (w >> 21) & 31;
    Some(Immediate {
        at: 0,
        width: 2,
        value: i64::from(w as u16 as i16),
        arg: (3..=10).contains(&rt).then(|| (rt - 3) as u8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn bit_fields_mask_only_their_bits() {
        let rel24 = Ppc64le.reloc(elf::R_PPC64_REL24).unwrap();
        // `bl 0` and `b 0`: the link bit survives the mask, so a call that became a tail
        // call differs.
        let mut bl = 0x4800_0001u32.to_le_bytes();
        let mut b = 0x4bff_fff0u32.to_le_bytes();
        rel24.clear(&mut bl, object::Endianness::Little);
        rel24.clear(&mut b, object::Endianness::Little);
        assert_eq!(u32::from_le_bytes(bl), 0x4800_0001);
        assert_eq!(u32::from_le_bytes(b), 0x4800_0000);
        // TOC16_LO_DS keeps the DS form's low two bits (`ld` vs `lwa`).
        let ds = Ppc64le.reloc(elf::R_PPC64_TOC16_LO_DS).unwrap();
        let mut f = [0x12, 0x34];
        ds.clear(&mut f, object::Endianness::Little);
        assert_eq!(f, [0x02, 0x00]);
        assert_eq!(Ppc64le.reloc(elf::R_PPC64_TOC16_HA).unwrap().width, 2);
        assert_eq!(Ppc64le.reloc(R_PPC64_ENTRY).unwrap().width, 0);
        assert_eq!(Ppc64le.reloc(9999), None);
    }

    #[test]
    fn flow_and_calls() {
        // 0: bl 0 (reloc), 4: nop, 8: b -8, c: beq +8, 10: blr, 14: bctrl
        let code = le(&[
            0x4800_0001,
            NOP,
            0x4bff_fff8,
            0x4182_0008,
            0x4e80_0020,
            0x4e80_0421,
        ]);
        let mut out = Vec::new();
        Ppc64le.decode_flow(&code, 0x100, &mut out);
        let got: Vec<(u64, Flow, u64, u64)> = out
            .iter()
            .map(|i| (i.start, i.flow, i.target, i.field))
            .collect();
        assert_eq!(
            got,
            [
                (0x100, Flow::Call, 0x100, 0x100),
                (0x104, Flow::Other, 0, 0),
                (0x108, Flow::Jump, 0x100, 0x108),
                (0x10c, Flow::CondJump, 0x114, 0x10c),
                (0x110, Flow::Other, 0, 0),
                (0x114, Flow::Other, 0, 0),
            ]
        );
        let insns = Ppc64le.decode_insns(&code);
        let calls: Vec<bool> = insns.iter().map(|i| i.call).collect();
        // bl, b (a direct unconditional jump), bctrl.
        assert_eq!(calls, [true, false, true, false, false, true]);
        // li r5,42 is a line-number load, addi r5,r3,42 is not.
        let li = Ppc64le.decode_insns(&le(&[0x38a0_002a, 0x38a3_002a]));
        let m = li[0].imm.map(|m| (m.at, m.width, m.value, m.arg));
        assert_eq!(m, Some((0, 2, 42, Some(2))));
        assert_eq!(li[1].imm, None);
    }

    #[test]
    fn calls_that_need_a_local_callee() {
        let r = elf::R_PPC64_REL24;
        // bl; nop: through a stub. bl; other: a call within the unit. b: a tail call.
        assert!(!Ppc64le.branch_needs_local_target(&le(&[0x4800_0001, NOP]), 0, r));
        assert!(!Ppc64le.branch_needs_local_target(&le(&[0x4800_0001, LD_R2_24_R1]), 0, r));
        assert!(Ppc64le.branch_needs_local_target(&le(&[0x4800_0001, 0x3860_0000]), 0, r));
        assert!(Ppc64le.branch_needs_local_target(&le(&[0x4800_0001]), 0, r));
        assert!(Ppc64le.branch_needs_local_target(&le(&[0x4800_0000, NOP]), 0, r));
        assert!(!Ppc64le.branch_needs_local_target(&le(&[0x4800_0001]), 0, elf::R_PPC64_ADDR32));
        assert!(Ppc64le.module_provided(".TOC."));
        assert!(Ppc64le.module_provided("_restgpr0_29"));
        assert!(!Ppc64le.module_provided("printk"));
    }

    #[test]
    fn entry_pad_is_the_global_entry() {
        let toc = le(&[0x3c4c_0000, 0x3842_0000, 0x7c08_02a6]);
        assert_eq!(Ppc64le.entry_pad_len(&toc), 8);
        let large = le(&[0xe84c_fff8, 0x7c42_6214]);
        assert_eq!(Ppc64le.entry_pad_len(&large), 8);
        assert_eq!(Ppc64le.entry_pad_len(&le(&[0x7c08_02a6, 0x4800_0001])), 0);
    }

    #[test]
    fn disassembly_names_fields() {
        let code = le(&[0x4800_0001, 0x3d22_0000, 0xe929_0000, 0x0000_0000]);
        let l = |pc: bool, t: &str| OperandLabel {
            pc_relative: pc,
            text: t.into(),
        };
        let d = Ppc64le.disassemble(&code, 0, &[l(true, "printk")]).unwrap();
        assert_eq!((d.text.as_str(), d.labels_used), ("bl printk", 1));
        let d = Ppc64le
            .disassemble(&code, 4, &[l(false, ".toc+0x8")])
            .unwrap();
        assert_eq!(d.text, "addis r9, r2, .toc+0x8");
        let d = Ppc64le
            .disassemble(&code, 8, &[l(false, ".toc+0x8")])
            .unwrap();
        assert_eq!(d.text, "ld r9, .toc+0x8(r9)");
        assert_eq!(Ppc64le.disassemble(&code, 16, &[]), None);
    }

    #[test]
    fn far_reference_becomes_a_slot_load() {
        // addis r9,r2,x@toc@ha; lwz r3,x@toc@l(r9); addi r4,r9,x+8@toc@l
        let mut code = le(&[0x3d22_0000, 0x8069_0000, 0x3889_0000]);
        assert_eq!(
            Ppc64le.far_reference_register(&code, 0, FarRef::High),
            Some(9)
        );
        assert_eq!(
            Ppc64le.far_reference_register(&code, 4, FarRef::Low),
            Some(9)
        );
        let t = Ppc64le
            .rewrite_far_reference(&mut code, 0, &[(4, 0), (8, 8)])
            .unwrap();
        assert_eq!(t, elf::R_PPC64_TOC16_DS);
        // ld r9,0(r2); lwz r3,0(r9); addi r4,r9,8
        assert_eq!(code, le(&[0xe922_0000, 0x8069_0000, 0x3889_0008]));
        // A use of another register is refused.
        let mut other = le(&[0x3d22_0000, 0x8068_0000]);
        assert!(Ppc64le
            .rewrite_far_reference(&mut other, 0, &[(4, 0)])
            .is_err());
        // ld's DS field needs a multiple of 4.
        let mut ds = le(&[0x3d22_0000, 0xe869_0000]);
        assert!(Ppc64le
            .rewrite_far_reference(&mut ds, 0, &[(4, 2)])
            .is_err());
    }
}
