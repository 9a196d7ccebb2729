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

pub mod x86_64;
mod x86_fast;

/// What the differ needs to know about a machine. Offsets are section offsets unless said
/// otherwise; `code` is the bytes of one section (or a function of it).
pub trait Arch: fmt::Debug + Send + Sync {
    /// The machine's name in messages (`x86-64`).
    fn name(&self) -> &'static str;
    /// The ELF `e_machine` of its objects.
    fn e_machine(&self) -> u16;
    /// What the `object` crate calls it, and its byte order, for writing the livepatch object.
    fn object_architecture(&self) -> object::Architecture;
    fn endianness(&self) -> object::Endianness;

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

    /// The symbol name of the ftrace entry call.
    fn fentry_symbol(&self) -> &'static str;
    /// How far into a function the ftrace call may sit (x86: after `endbr64`).
    fn fentry_window(&self) -> u64;
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
}

/// Every machine klpgen supports.
pub const ALL: &[&dyn Arch] = &[&x86_64::X86_64];

/// The machine of an object's `e_machine`, if klpgen supports it.
pub fn for_machine(e_machine: u16) -> Option<&'static dyn Arch> {
    ALL.iter().copied().find(|a| a.e_machine() == e_machine)
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
    /// Field width in bytes (0 for a no-op relocation).
    pub width: u64,
    /// Its value depends on where the site is.
    pub pc_relative: bool,
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
