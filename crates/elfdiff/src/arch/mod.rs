//! The machine-specific half of the differ behind one trait, [`Arch`]: relocation kinds and
//! where a PC-relative field really points, instruction decoding (for the call graph, the
//! comparison's moved immediates (line numbers) and `klpgen explain`'s disassembly), the ftrace
//! entry, the code sections copied piece by piece and the special-section entries, runtime
//! constants, and the kernel configuration facts that differ per machine. Every object
//! records its machine ([`crate::Object::arch`], from `e_machine`), and nothing outside this
//! folder names one (tests/tidy.rs `machine_names`): a machine is added as one file here and
//! one line in [`ALL`].

use std::collections::HashMap;
use std::fmt;

pub mod aarch64;
pub mod loongarch64;
pub mod ppc64le;
pub mod s390x;
pub mod x86_64;
mod x86_fast;

/// What the differ needs to know about a machine. Offsets are section offsets unless said
/// otherwise; `code` is the bytes of one section (or a function of it).
pub trait Arch: fmt::Debug + Send + Sync {
    /// The machine's name in messages (`x86-64`).
    fn name(&self) -> &'static str;
    /// Debian's name of the architecture (`amd64`): the `Architecture` of a livepatch's
    /// `.deb`.
    fn debian_arch(&self) -> &'static str;
    /// The ELF `e_machine` of its objects.
    fn e_machine(&self) -> u16;
    /// What the `object` crate calls it, and its byte order, for writing the livepatch object.
    fn object_architecture(&self) -> object::Architecture;
    fn endianness(&self) -> object::Endianness;
    /// Whether klpgen reads objects of this ELF header: the byte order, and `e_flags` (ppc64:
    /// the ELFv2 ABI). An error names what differs.
    fn check_header(&self, endian: object::Endianness, e_flags: u32) -> Result<(), String> {
        let _ = e_flags;
        if endian == self.endianness() {
            Ok(())
        } else {
            Err(format!(
                "{:?}-endian objects; klpgen reads {} objects only as {:?}-endian",
                endian,
                self.name(),
                self.endianness()
            ))
        }
    }

    /// What a relocation type does to its field; None for a type klpgen does not know
    /// (objects using one are refused when parsed). Asked for every relocation: keep it
    /// cheap.
    fn reloc(&self, r_type: u32) -> Option<RelocKind>;
    /// The type's name (`R_X86_64_PC32`), for messages and dumps.
    fn reloc_name(&self, r_type: u32) -> Option<&'static str>;
    /// For a relocation at `site`, the distance from the site to the address the CPU adds a
    /// PC-relative field to (x86: the end of the instruction); 0 for other fields. `insn` is
    /// the decoded instruction holding the site, None where the code was not decoded. The
    /// real target offset is `addend + bias`.
    fn pcrel_bias(&self, r_type: u32, site: u64, insn: Option<(u64, u64)>) -> i64;
    /// Whether [`Arch::pcrel_bias`] of a relocation of type `r_type` reads its instruction:
    /// when not, the code is not decoded to answer it.
    fn pcrel_bias_reads_insn(&self, _r_type: u32) -> bool {
        true
    }

    /// Decode the instruction boundaries of a code section.
    fn decode(&self, code: &[u8]) -> InsnMap;
    /// Decode `code` (found at section offset `base`) into instructions with their control
    /// flow, for the call graph; appends to `out`. Undecodable bytes become `Flow::Other`.
    fn decode_flow(&self, code: &[u8], base: u64, out: &mut Vec<FlowInsn>);
    /// Decode `code` from offset 0 into instructions with what the comparison of two
    /// versions of a function asks of them ([`Insn`]): the tolerance of moved source lines.
    fn decode_insns(&self, code: &[u8]) -> Vec<Insn>;
    /// The instruction at `offset` of `code` in the machine's assembly syntax, relocation
    /// fields named by `labels` (those of the relocations inside the instruction); None
    /// when `offset` is past the code.
    fn disassemble(&self, code: &[u8], offset: u64, labels: &[OperandLabel])
        -> Option<Disassembly>;

    /// Whether a local symbol of this name only marks what kind of bytes follow (arm64's
    /// mapping symbols `$x` and `$d`): not a symbol of the program, never a reference's target.
    fn is_mapping_symbol(&self, name: &str) -> bool {
        let _ = name;
        false
    }
    /// The symbol name of the ftrace entry call.
    fn fentry_symbol(&self) -> &'static str;
    /// The sections that list each function's ftrace site (`__mcount_loc`, or
    /// `__patchable_function_entries` where the entry is a run of nops the compiler leaves).
    fn ftrace_site_sections(&self) -> &'static [&'static str] {
        &["__mcount_loc"]
    }
    /// How far into a function the ftrace call may sit (x86: after `endbr64`).
    fn fentry_window(&self) -> u64;
    /// How far before a function's symbol its recorded ftrace site may sit (arm64 with
    /// `-fpatchable-function-entry=4,2`: two of the nops precede it).
    fn fentry_before(&self) -> u64 {
        0
    }
    /// Length of the landing pad a function may start with (x86: `endbr64`), 0 if `code`
    /// does not start with one; a branch to just past it still enters the function.
    fn entry_pad_len(&self, code: &[u8]) -> u64;
    /// Whether a branch to the named symbol is a thunk that stands for a return or an
    /// indirect branch (x86: return and retpoline thunks), not a call of that function.
    fn is_branch_thunk(&self, name: &str) -> bool;

    /// The special sections whose entries point into functions, cut per entry by the plan,
    /// in the order the livepatch object gets them.
    fn special_sections(&self) -> &'static [SpecialSection];
    /// Sections objtool writes on this machine; when objtool runs again on the livepatch,
    /// copies would collide with what it regenerates.
    fn objtool_sections(&self) -> &'static [&'static str];
    /// Prefixes of further sections of this machine whose role klpgen knows (metadata it
    /// drops or that the module build regenerates, code copied piece by piece), besides the
    /// special and objtool sections.
    fn known_section_prefixes(&self) -> &'static [&'static str];
    /// Sections of code reached only through references from elsewhere in the object, which
    /// the livepatch copies piece by piece (see `carve.rs`): each is cut at every offset an
    /// allocated section refers to (the referenced offset being the relocation's addend plus
    /// [`Arch::pcrel_bias`] at its site).
    fn carved_code_sections(&self) -> &'static [CarvedCode];
    /// How section `name` is copied piece by piece, if it is: one of
    /// [`Arch::carved_code_sections`], or of a family of them by prefix (ppc64's
    /// `__ftr_alt_<n>`).
    fn carved_code(&self, name: &str) -> Option<CarvedCode> {
        self.carved_code_sections()
            .iter()
            .find(|c| c.name == name)
            .copied()
    }
    /// Whether execution can run past the end of `code` (a piece of a carved section that runs
    /// where it lies): false when its last instruction is an unconditional jump, a return or
    /// a trap, true otherwise (undecodable bytes included).
    fn falls_through(&self, code: &[u8]) -> bool;
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

    /// For a PC-relative field at `field` of an entry of special section `section`: how far
    /// the address it counts from lies from the field (0: from the field itself; ppc64's
    /// feature fixups store `label - entry start`, so their fields count from the entry).
    fn entry_field_bias(&self, section: &str, field: u64) -> i64 {
        let _ = (section, field);
        0
    }

    /// A pointer-sized runtime constant (the kernel's `runtime_const_ptr(sym)`) whose
    /// placeholder immediate starts at `site` of `code`: the instruction rewritten to load the
    /// variable `sym` itself, through one relocation against it. The kernel patches the
    /// placeholder in vmlinux at boot and never in a module; the variable holds the value
    /// that was patched in. An error says why the bytes are not the expected site.
    fn runtime_ptr_load(&self, code: &[u8], site: u64) -> Result<ConstLoad, String>;

    /// The prefix of the traceable stubs `SYSCALL_DEFINEn` wraps a syscall's body in
    /// (x86-64: `__x64_sys_`), for refusal hints.
    fn syscall_stub_prefix(&self) -> &'static str;
    /// Kernel config options that, on this machine, make kbuild run objtool on the linked
    /// module ("delayed objtool", `--link --module`) instead of on each object as it is
    /// compiled; `CONFIG_LTO_CLANG`, which does so on every machine, is not among them.
    fn delayed_objtool_options(&self) -> &'static [&'static str];
    /// The kernel config option set exactly for this machine (`CONFIG_X86_64`): how a
    /// target's `.config` names its machine.
    fn kernel_config(&self) -> &'static str;
    /// kbuild's `ARCH=` for this machine (`x86`).
    fn kbuild_arch(&self) -> &'static str;
    /// The prefix of the machine's cross toolchain as Debian names it (`CROSS_COMPILE=`,
    /// `x86_64-linux-gnu-`), used when klpgen runs on another machine and neither the target's
    /// configuration nor the user names one.
    fn cross_compile(&self) -> &'static str;
    /// What Rust's `std::env::consts::ARCH` calls this machine: klpgen runs kbuild without a
    /// cross toolchain when it runs on the target's machine.
    fn host_arch(&self) -> &'static str;
    /// Why the kernel's Rust support cannot build a livepatch hook for this machine (Linux
    /// 6.12 has Rust on x86-64, arm64, loongarch and riscv), or None when it can.
    fn rust_unsupported(&self) -> Option<&'static str> {
        None
    }

    /// Undefined symbols that the module link or the module loader provides on this machine
    /// (ppc64: `.TOC.`, the `_savegpr0_N` helpers `ld --save-restore-funcs` adds): references
    /// to them stay ordinary relocations, never klp ones, and are not looked up in the target.
    fn module_provided(&self, name: &str) -> bool {
        let _ = name;
        false
    }
    /// Whether the branch whose relocation (of type `r_type`) sits at `site` of `code` can only
    /// reach a target inside the livepatch module: a module reaches the kernel through a stub
    /// the loader builds, and on some machines the call site must be made for one (ppc64: `bl`
    /// then a `nop` the loader turns into the TOC restore; a bare `bl` or a tail-call `b` to a
    /// function of the same unit is not). The plan then carries the callee.
    fn branch_needs_local_target(&self, code: &[u8], site: u64, r_type: u32) -> bool {
        let _ = (code, site, r_type);
        false
    }
    /// The section of address slots the code loads pointers from (ppc64: `.toc`), whose
    /// entries are compared by what they point at, not by where they sit, and copied per
    /// entry.
    fn slot_section(&self) -> Option<&'static str> {
        None
    }
    /// A reference of type `r_type` that cannot reach an object of the running kernel from a
    /// module and how the plan makes it sound, if any (ppc64: TOC-relative addressing counts
    /// from the module's own TOC).
    fn far_reference(&self, r_type: u32) -> Option<FarRef> {
        let _ = r_type;
        None
    }
    /// Rewrite the instruction pair of a far reference (`FarRef::High` at `high`, the
    /// `FarRef::Low` uses of its register at `lows`, offsets into `code`) into a load of the
    /// target's address from a slot: returns the relocation type the high instruction then
    /// takes against the slot, and writes each low instruction's new displacement (its addend
    /// minus the high one's, `deltas`). An error says why the code is not the expected pair.
    fn rewrite_far_reference(
        &self,
        code: &mut [u8],
        high: u64,
        lows: &[(u64, i64)],
    ) -> Result<u32, String> {
        let _ = (code, high, lows);
        Err(format!("{} has no far references", self.name()))
    }
    /// The register a `FarRef::High` instruction at `at` writes, or a `FarRef::Low` one at
    /// `at` uses as its base (None when the bytes are not such an instruction).
    fn far_reference_register(&self, code: &[u8], at: u64, part: FarRef) -> Option<u32> {
        let _ = (code, at, part);
        None
    }
    /// The relocation type of one pointer-sized absolute address (for a slot the plan adds).
    fn pointer_reloc(&self) -> u32;
}

/// The two halves of a reference that counts from a base register of the module (ppc64: the
/// TOC in r2): the high part (`addis rX,r2,sym@toc@ha`) and the low parts that use its
/// register (`addi rY,rX,sym@toc@l`, `ld rY,sym@toc@l(rX)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarRef {
    High,
    Low,
}

/// [`Arch::falls_through`] from a machine's [`Arch::decode_flow`]: false only when the last
/// instruction is a direct unconditional jump that ends `code`. A return or a trap counts as
/// falling through, which only ever copies one piece more than needed.
pub(crate) fn falls_through_by_flow(arch: &dyn Arch, code: &[u8]) -> bool {
    let mut out = Vec::new();
    arch.decode_flow(code, 0, &mut out);
    out.last()
        .is_none_or(|i| i.flow != Flow::Jump || i.end != code.len() as u64)
}

/// Every machine klpgen supports.
pub const ALL: &[&dyn Arch] = &[
    &x86_64::X86_64,
    &ppc64le::Ppc64le,
    &s390x::S390x,
    &aarch64::Aarch64,
    &loongarch64::Loongarch64,
];

/// The machine of an object's `e_machine`, if klpgen supports it.
pub fn for_machine(e_machine: u16) -> Option<&'static dyn Arch> {
    ALL.iter().copied().find(|a| a.e_machine() == e_machine)
}

/// What a machine klpgen does not read is, for a refusal: its name for the machines Linux
/// builds for (32-bit ones included, since a 32-bit object is a common mistake), else its
/// number.
pub fn unsupported_machine(e_machine: u16) -> String {
    use object::elf;
    let name = match e_machine {
        elf::EM_386 => "i386 (32-bit x86)",
        elf::EM_ARM => "32-bit ARM",
        elf::EM_PPC => "32-bit PowerPC",
        elf::EM_MIPS => "MIPS",
        elf::EM_RISCV => "RISC-V",
        elf::EM_SPARCV9 => "SPARC64",
        elf::EM_PARISC => "PA-RISC",
        elf::EM_SH => "SuperH",
        elf::EM_ALPHA => "Alpha",
        elf::EM_IA_64 => "IA-64",
        _ => return format!("machine {e_machine}"),
    };
    format!("{name} (e_machine {e_machine})")
}

/// The machine a kernel configuration is for (`is_set` answers whether a `CONFIG_` option is
/// `y`), if klpgen supports it.
pub fn for_config(is_set: impl Fn(&str) -> bool) -> Option<&'static dyn Arch> {
    ALL.iter().copied().find(|a| is_set(a.kernel_config()))
}

/// Whether kbuild runs objtool on the linked module of a kernel with this configuration
/// ("delayed objtool": a machine option such as x86's IBT, or Clang LTO on any machine), and
/// so regenerates objtool's sections for a livepatch module itself.
pub fn delayed_objtool(arch: &dyn Arch, is_set: impl Fn(&str) -> bool) -> bool {
    is_set("CONFIG_OBJTOOL")
        && (is_set("CONFIG_LTO_CLANG") || arch.delayed_objtool_options().iter().any(|o| is_set(o)))
}

/// The supported machines' names, for messages (`x86-64`).
pub fn supported() -> String {
    let names: Vec<&str> = ALL.iter().map(|a| a.name()).collect();
    names.join(", ")
}

/// The machine a livepatch object is written for: that of the objects its plan comes from.
/// The default, for plans made by hand (tests), is the first machine of [`ALL`].
#[derive(Clone, Copy)]
pub struct Machine(pub &'static dyn Arch);

impl Machine {
    pub fn architecture(self) -> object::Architecture {
        self.0.object_architecture()
    }
    pub fn endianness(self) -> object::Endianness {
        self.0.endianness()
    }
}

impl Default for Machine {
    fn default() -> Self {
        Machine(ALL[0])
    }
}

impl fmt::Debug for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// What a relocation type does to the field at its site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelocKind {
    /// Width in bytes of the bytes holding the field (0 for a no-op relocation): the whole
    /// instruction word for a bit field.
    pub width: u64,
    /// Its value depends on where the site is.
    pub pc_relative: bool,
    /// The bits of those `width` bytes (read as one integer in the object's byte order) that
    /// the relocation fills; the others are the instruction's own (ppc64 `REL24`: the opcode
    /// and the link bit around a 24-bit field) and must be compared.
    pub mask: u64,
}

impl RelocKind {
    /// A field of `width` whole bytes.
    pub const fn bytes(width: u64, pc_relative: bool) -> Self {
        let mask = if width >= 8 {
            u64::MAX
        } else {
            (1u64 << (width * 8)) - 1
        };
        RelocKind {
            width,
            pc_relative,
            mask,
        }
    }
    /// A bit field: `mask` of `width` bytes.
    pub const fn bits(width: u64, pc_relative: bool, mask: u64) -> Self {
        RelocKind {
            width,
            pc_relative,
            mask,
        }
    }
    /// Zero the field's bits in `bytes` (the `width` bytes at the site, fewer at the end of a
    /// copy), keeping the instruction's own bits.
    pub fn clear(&self, bytes: &mut [u8], endian: object::Endianness) {
        let n = bytes.len().min(self.width as usize);
        if n == 0 {
            return;
        }
        let field = &mut bytes[..n];
        let full = RelocKind::bytes(self.width, self.pc_relative).mask;
        if self.mask == full || n < self.width as usize {
            field.fill(0);
            return;
        }
        let mut v: u64 = 0;
        let big = endian == object::Endianness::Big;
        let mut read = |b: &u8| v = (v << 8) | u64::from(*b);
        if big {
            field.iter().for_each(&mut read);
        } else {
            field.iter().rev().for_each(&mut read);
        }
        v &= !self.mask;
        for (k, b) in field.iter_mut().enumerate() {
            let shift = 8 * (if big { n - 1 - k } else { k });
            *b = (v >> shift) as u8;
        }
    }
}

/// A special section: its name, the size of its entries by default (when fixed, or the same
/// in every kernel), the DWARF structure of the target that gives it (`bug_entry`), and the
/// entry layouts of the kernels klpgen knows, by which an entry size is recognised when
/// neither the target nor the command line gives one (`entries.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialSection {
    pub name: &'static str,
    pub entry_size: Option<u64>,
    pub layout: Option<&'static str>,
    pub layouts: &'static [EntryLayout],
}

/// One kernel version's layout of a special section's entries: its size, and the fields every
/// entry relocates. An entry size is recognised when exactly one layout matches every entry of
/// the section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLayout {
    pub size: u64,
    pub fields: &'static [EntryField],
    /// Bytes of the entry that are a source line number (`__bug_table`'s `line`): a moved
    /// line is no change of the function the entry belongs to.
    pub line: Option<(u64, u64)>,
    /// The last entry may be shorter than the others, down to the end of its last field:
    /// each entry is aligned before it is emitted, not padded after (x86's
    /// `.parainstructions`).
    pub short_tail: bool,
    /// The kernels that use it, for messages (`Linux 4.6 to 5.15`).
    pub kernels: &'static str,
}

/// A relocated field of a special-section entry: its offset in the entry, what its relocation
/// does, and what it points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryField {
    pub at: u64,
    pub kind: RelocKind,
    pub to: FieldTarget,
}

/// What a field of a special-section entry points at, as far as it tells layouts apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldTarget {
    Any,
    /// The start of a named symbol (a handler function: relocated against the symbol itself,
    /// addend 0).
    SymbolStart,
    /// Never the start of a named symbol (an instruction inside a function).
    NotSymbolStart,
}

/// A code section copied piece by piece ([`Arch::carved_code_sections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarvedCode {
    pub name: &'static str,
    /// Its code runs where it lies (a jump goes there), so a piece that does not end in a jump
    /// or return runs on into the next one; the replacement code of alternatives is instead
    /// copied over its function's instructions before it runs.
    pub in_place: bool,
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

/// One decoded instruction, as the comparison of two versions of a function reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub start: u64,
    pub len: u64,
    /// A call of any kind, or a direct unconditional jump (a tail call where a relocation
    /// sends it out of the function).
    pub call: bool,
    /// The immediate it moves into a register or memory (x86: `mov $imm, dst`, `push $imm`),
    /// the way a constant such as a source line number (`__LINE__`) is passed on; None for
    /// other instructions, whose immediates are operands of a computation.
    pub imm: Option<Immediate>,
}

/// The moved immediate of an instruction ([`Insn::imm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Immediate {
    /// Where its field lies in the instruction, and how wide it is: two instructions that
    /// differ only inside it are the same instruction with another constant.
    pub at: u64,
    pub width: u64,
    /// Its value, sign-extended from the field.
    pub value: i64,
    /// Which integer argument of a call (0: the first) it is loaded for, when its destination
    /// is a 32-bit argument register of the machine's calling convention (x86-64: `%edi`,
    /// `%esi`, `%edx`, `%ecx`, `%r8d`, `%r9d`).
    pub arg: Option<u8>,
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

/// How a disassembly names the target of a relocation inside the instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperandLabel {
    /// The field is PC-relative (the decoder sees it as counting from the instruction's
    /// end, a zero field pointing there); an absolute one reads as 0.
    pub pc_relative: bool,
    pub text: String,
}

/// One disassembled instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disassembly {
    pub text: String,
    /// How many of the labels the text names in place of an operand.
    pub labels_used: usize,
}
