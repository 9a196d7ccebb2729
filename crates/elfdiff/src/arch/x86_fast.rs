//! x86-64 instructions decoded, and the common ones formatted, without iced-x86's tables. iced
//! builds its decoder's tables (about 3 M instructions) and its Intel formatter's (about 5 M)
//! the first time either is used: more than the rest of a `klpgen diff` of a small pair costs.
//! The integer and system instructions compilers and the kernel's inline assembly emit are
//! decoded here from the opcode maps; so are, for their length only ([`Map::Ext`]), the SSE,
//! AVX (VEX), MMX, x87 and rarer system instructions of the kernel's crypto, RAID, FPU and
//! virtualization code. Anything else (EVEX, XOP, 3DNow!, unusual prefix combinations) gives
//! `None` and is left to iced (`x86_64.rs`), as is every instruction whose text this file does
//! not write exactly as iced's `IntelFormatter` with klpgen's options would. The tests hold
//! every instruction this file accepts to iced's answer: length, control flow, and text; an
//! ignored one counts what real objects still leave to iced.

use super::{Flow, Immediate, OperandLabel};

/// The opcode map of an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Map {
    One,
    /// `0F xx`.
    Two,
    /// SSE and AVX (`0F`, `0F 38`, `0F 3A` with mandatory prefixes, VEX), x87 and rare system
    /// instructions: decoded ([`ext`]) only for their length; none is a branch, a call or a
    /// move of an immediate, and none is formatted here.
    Ext,
}

/// One decoded instruction: its length and the parts of its encoding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inst {
    pub len: usize,
    pub map: Map,
    pub op: u8,
    /// `66`: 16-bit operands (unless REX.W).
    pub opsize16: bool,
    pub lock: bool,
    /// `67`: 32-bit addressing (only of ModRM memory operands here: same length).
    pub addr32: bool,
    /// `F2` or `F3`, or 0.
    pub rep: u8,
    /// A segment override prefix, or 0.
    pub seg: u8,
    /// The REX prefix (0x40..=0x4f), or 0.
    pub rex: u8,
    pub modrm: Option<u8>,
    pub sib: Option<u8>,
    /// The displacement, sign-extended, and its size in bytes (0: none).
    pub disp: i64,
    pub disp_len: usize,
    /// The immediate (zero-extended raw bytes), its size, and its offset in the instruction.
    pub imm: u64,
    pub imm_len: usize,
    pub imm_at: usize,
}

/// How an opcode's immediate is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imm {
    None,
    /// 1 byte.
    B,
    /// 2 bytes.
    W,
    /// 2 bytes with `66`, else 4.
    Z,
    /// `B8+r`: 8 with REX.W, 2 with `66`, else 4.
    V,
    /// A branch displacement of 1 byte.
    Rel8,
    /// A branch displacement of 4 bytes.
    Rel32,
    /// `enter`: 2 + 1 bytes.
    Enter,
    /// `mov` to or from an absolute address (`A0`..`A3`): 8 bytes (4 with `67`).
    Moffs,
}

impl Inst {
    pub fn rex_w(&self) -> bool {
        self.rex & 8 != 0
    }
    fn rex_r(&self) -> u8 {
        (self.rex >> 2) & 1
    }
    fn rex_x(&self) -> u8 {
        (self.rex >> 1) & 1
    }
    fn rex_b(&self) -> u8 {
        self.rex & 1
    }
    fn mod_(&self) -> u8 {
        self.modrm.map_or(0, |m| m >> 6)
    }
    /// The ModRM `reg` field (without REX.R).
    pub fn reg(&self) -> u8 {
        self.modrm.map_or(0, |m| (m >> 3) & 7)
    }
    fn rm(&self) -> u8 {
        self.modrm.map_or(0, |m| m & 7)
    }
    /// The operand is memory (ModRM `mod` is not 3).
    fn is_mem(&self) -> bool {
        self.modrm.is_some() && self.mod_() != 3
    }

    /// A direct branch: its kind, the target and the offset of its displacement field.
    pub fn flow(&self, ip: u64) -> (Flow, u64, u64) {
        let flow = match (self.map, self.op) {
            (Map::One, 0xe8) => Flow::Call,
            (Map::One, 0xe9 | 0xeb) => Flow::Jump,
            (Map::One, 0x70..=0x7f | 0xe0..=0xe3) | (Map::Two, 0x80..=0x8f) => Flow::CondJump,
            _ => return (Flow::Other, 0, 0),
        };
        let rel = match self.imm_len {
            1 => self.imm as u8 as i8 as i64,
            _ => self.imm as u32 as i32 as i64,
        };
        let next = ip.wrapping_add(self.len as u64);
        (flow, next.wrapping_add(rel as u64), ip + self.imm_at as u64)
    }

    /// A call of any kind (direct, indirect, far).
    pub fn is_call(&self) -> bool {
        match (self.map, self.op) {
            (Map::One, 0xe8) => true,
            (Map::One, 0xff) => matches!(self.reg(), 2 | 3),
            _ => false,
        }
    }

    /// `mov $imm32, %r32`: the register (0 = eax ... 15 = r15d).
    pub fn mov_r32_imm32(&self) -> Option<u32> {
        (self.map == Map::One
            && (0xb8..=0xbf).contains(&self.op)
            && !self.rex_w()
            && !self.opsize16)
            .then(|| u32::from(self.op & 7) + 8 * u32::from(self.rex_b()))
    }

    /// The immediate a `mov $imm, dst` or `push $imm` moves (`Insn::imm`): its field, its
    /// value sign-extended from the field, and which SysV argument register (`%edi`, `%esi`,
    /// `%edx`, `%ecx`, `%r8d`, `%r9d`) a `mov $imm32, %r32` loads.
    pub fn moved_immediate(&self) -> Option<Immediate> {
        // B0+r, B8+r, C6 /0, C7 /0 (`accepted` lets no other C6/C7 through), 68, 6A; the
        // absolute address of A0..A3 is a displacement, not an immediate.
        let moves =
            self.map == Map::One && matches!(self.op, 0xb0..=0xbf | 0xc6 | 0xc7 | 0x68 | 0x6a);
        if !moves || self.imm_len == 0 {
            return None;
        }
        let shift = 64 - 8 * self.imm_len as u32;
        let value = ((self.imm << shift) as i64) >> shift;
        const ARGS: [u32; 6] = [7, 6, 2, 1, 8, 9];
        let arg = self
            .mov_r32_imm32()
            .and_then(|r| ARGS.iter().position(|&a| a == r))
            .map(|k| k as u8);
        Some(Immediate {
            at: self.imm_at as u64,
            width: self.imm_len as u64,
            value,
            arg,
        })
    }

    /// Execution never continues after it: an unconditional jump, a (near) return, `ud2` or
    /// `int3`.
    pub fn ends_flow(&self) -> bool {
        match (self.map, self.op) {
            (Map::One, 0xe9 | 0xeb | 0xc2 | 0xc3 | 0xcc) => true,
            (Map::One, 0xff) => matches!(self.reg(), 4 | 5),
            (Map::Two, 0x0b) => true,
            _ => false,
        }
    }
}

/// The one-byte opcodes decoded here: whether a ModRM byte follows, and the immediate.
const fn one_byte(op: u8) -> Option<(bool, Imm)> {
    use Imm::*;
    Some(match op {
        0x00..=0x3f => match op & 7 {
            0..=3 => (true, None),
            4 => (false, B),
            5 => (false, Z),
            _ => return Option::None,
        },
        0x50..=0x5f => (false, None),
        0x63 => (true, None),
        0x68 => (false, Z),
        0x69 => (true, Z),
        0x6a => (false, B),
        0x6b => (true, B),
        0x6c..=0x6f => (false, None),
        0x70..=0x7f => (false, Rel8),
        0x80 | 0x83 => (true, B),
        0x81 => (true, Z),
        0x84..=0x8d | 0x8f => (true, None),
        0x8e => (true, None),
        0x90..=0x99 | 0x9b..=0x9f => (false, None),
        0xa0..=0xa3 => (false, Moffs),
        0xa4..=0xa7 | 0xaa..=0xaf => (false, None),
        0xa8 => (false, B),
        0xa9 => (false, Z),
        0xb0..=0xb7 => (false, B),
        0xb8..=0xbf => (false, V),
        0xc0 | 0xc1 => (true, B),
        0xc2 | 0xca => (false, W),
        0xc3 | 0xc9 | 0xcb | 0xcc | 0xcf => (false, None),
        0xc6 => (true, B),
        0xc7 => (true, Z),
        0xc8 => (false, Enter),
        0xcd => (false, B),
        0xd0..=0xd3 => (true, None),
        0xd7 => (false, None),
        0xe0..=0xe3 => (false, Rel8),
        0xe4..=0xe7 => (false, B),
        0xe8 | 0xe9 => (false, Rel32),
        0xeb => (false, Rel8),
        0xec..=0xef | 0xf1 | 0xf4 | 0xf5 | 0xf8..=0xfd => (false, None),
        0xf6 | 0xf7 | 0xfe | 0xff => (true, None),
        _ => return Option::None,
    })
}

/// The `0F xx` opcodes decoded here.
const fn two_byte(op: u8) -> Option<(bool, Imm)> {
    use Imm::*;
    Some(match op {
        0x05..=0x09 | 0x0b | 0x30..=0x33 | 0xa0..=0xa2 | 0xa8 | 0xa9 | 0xc8..=0xcf => (false, None),
        0x01 | 0x0d | 0x18 | 0x1e | 0x1f | 0x20..=0x23 => (true, None),
        0x40..=0x4f | 0x90..=0x9f => (true, None),
        0x80..=0x8f => (false, Rel32),
        0xa3 | 0xa5 | 0xab | 0xad | 0xae | 0xaf | 0xb0 | 0xb1 | 0xb3 | 0xb6 | 0xb7 | 0xb8 => {
            (true, None)
        }
        0xbb..=0xbf | 0xc0 | 0xc1 | 0xc3 | 0xc7 => (true, None),
        0xa4 | 0xac | 0xba => (true, B),
        // `ud1`, which the kernel's UBSAN traps use.
        0xb9 => (true, None),
        _ => return Option::None,
    })
}

/// Whether a LOCK prefix is allowed on this (memory-operand) instruction.
fn lockable(i: &Inst) -> bool {
    if !i.is_mem() {
        return false;
    }
    let reg = i.reg();
    match i.map {
        Map::Ext => false,
        Map::One => match i.op {
            0x00..=0x3f => i.op & 7 <= 1 && i.op < 0x38,
            0x80 | 0x81 | 0x83 => reg != 7,
            0x86 | 0x87 => true,
            0xf6 | 0xf7 => matches!(reg, 2 | 3),
            0xfe | 0xff => reg <= 1,
            _ => false,
        },
        Map::Two => match i.op {
            0xab | 0xb3 | 0xbb | 0xb0 | 0xb1 | 0xc0 | 0xc1 => true,
            0xba => reg >= 5,
            0xc7 => reg == 1,
            _ => false,
        },
    }
}

/// Whether the decoded instruction is one this file is sure iced decodes the same way (valid,
/// same length); otherwise the caller asks iced.
fn accepted(i: &Inst) -> bool {
    let (reg, mem, modrm) = (i.reg(), i.is_mem(), i.modrm.unwrap_or(0));
    if i.lock && (!lockable(i) || i.rep != 0) {
        return false;
    }
    // 32-bit addressing changes the immediates and displacements of a few opcodes (the
    // absolute address of A0..A3, `jecxz`); only the ModRM memory operands of the one-byte
    // map are taken here.
    if i.addr32 && !(i.map == Map::One && i.is_mem()) {
        return false;
    }
    // No mandatory-prefix games and no 16-bit branches.
    let plain = i.rep == 0 && !i.opsize16;
    match i.map {
        // `ext` decides these.
        Map::Ext => false,
        Map::One => match i.op {
            0x8d => mem,
            0x8c => reg < 6,
            0x8e => reg < 6 && reg != 1,
            0x8f => reg == 0,
            0xc6 | 0xc7 => reg == 0,
            0xfe => reg <= 1,
            0xff => reg != 7 && (mem || !matches!(reg, 3 | 5)),
            0x70..=0x7f | 0xe0..=0xe3 | 0xe8 | 0xe9 | 0xeb => !i.opsize16,
            _ => true,
        },
        Map::Two => match i.op {
            0x01 => {
                plain
                    && if mem {
                        reg != 5
                    } else {
                        // clac, stac, swapgs, rdtscp, xgetbv, xsetbv, and the kernel's
                        // `serialize` (sync_core), monitor/mwait (idle), rdpkru/wrpkru.
                        matches!(
                            modrm,
                            0xca | 0xcb
                                | 0xf8
                                | 0xf9
                                | 0xd0
                                | 0xd1
                                | 0xe8
                                | 0xc8
                                | 0xc9
                                | 0xee
                                | 0xef
                        )
                    }
            }
            0x0d => plain && mem && reg <= 1,
            0x18 => plain && mem && reg <= 3,
            0x1e => i.rep == 0xf3 && !i.opsize16 && modrm == 0xfa,
            0x1f => i.rep == 0 && reg == 0,
            0x20 | 0x22 => plain && i.rex_r() == 0 && matches!(reg, 0 | 2 | 3 | 4),
            0x21 | 0x23 => plain && i.rex_r() == 0,
            0x05..=0x09 | 0x0b | 0x30..=0x33 | 0xa2 => plain,
            0xa0 | 0xa1 | 0xa8 | 0xa9 => i.rep == 0,
            0x80..=0x8f => !i.opsize16,
            0xae => plain && (mem || matches!(modrm, 0xe8 | 0xf0 | 0xf8)),
            0xb8 => i.rep == 0xf3,
            0xba => i.rep == 0 && reg >= 4,
            0xbc | 0xbd => i.rep != 0xf2,
            0xc3 => plain && mem,
            0xc7 => plain && if mem { reg == 1 } else { matches!(reg, 6 | 7) },
            0xc8..=0xcf => plain,
            _ => i.rep == 0,
        },
    }
}

/// How [`length`] reads an opcode without the rest of the decoder: a byte of flags.
const FAST: u8 = 1;
const MODRM: u8 = 2;
/// `reg` must be 0 (`nop` 0F 1F, `mov` C6/C7).
const REG0: u8 = 4;
/// The operand must be memory (`lea`).
const MEM: u8 = 8;
/// The immediate's size in bytes (`V`: 4, 8 with REX.W), shifted.
const IMM_SHIFT: u8 = 4;
/// `B8+r`: 8 bytes of immediate with REX.W.
const IMM_V: u8 = 0x80;

/// The flags of an opcode (`two`: of the `0F` map) for [`length`]: what [`decode`] and
/// [`accepted`] say of it without legacy prefixes, or 0 (not FAST) where that depends on
/// more than `reg` being 0 or the operand being memory.
const fn fast_flags(op: u8, two: bool) -> u8 {
    let d = if two { two_byte(op) } else { one_byte(op) };
    let Some((modrm, imm)) = d else {
        return 0;
    };
    let mut f = FAST;
    if modrm {
        f |= MODRM;
    }
    let imm_len: u8 = match imm {
        Imm::None => 0,
        Imm::B | Imm::Rel8 => 1,
        Imm::W => 2,
        Imm::Z | Imm::Rel32 => 4,
        Imm::V => {
            f |= IMM_V;
            4
        }
        Imm::Enter => 3,
        // 8 bytes do not fit the flags.
        Imm::Moffs => return 0,
    };
    f |= imm_len << IMM_SHIFT;
    let special = if two {
        match op {
            0x1f => {
                f |= REG0;
                false
            }
            0xc3 => {
                f |= MEM;
                false
            }
            0x01 | 0x0d | 0x18 | 0x1e | 0x20..=0x23 | 0xae | 0xb8 | 0xba | 0xc7 => true,
            _ => false,
        }
    } else {
        match op {
            0xc6 | 0xc7 => {
                f |= REG0;
                false
            }
            0x8d => {
                f |= MEM;
                false
            }
            // `test`'s immediate, XOP, segment registers, `ff`'s groups.
            0x8c | 0x8e | 0x8f | 0xf6 | 0xf7 | 0xfe | 0xff => true,
            _ => false,
        }
    };
    if special {
        0
    } else {
        f
    }
}

const fn fast_table(two: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut op = 0;
    while op < 256 {
        t[op] = fast_flags(op as u8, two);
        op += 1;
    }
    t
}

/// [`fast_flags`] of every one-byte and `0F` opcode, built at compile time.
static FAST_ONE: [u8; 256] = fast_table(false);
static FAST_TWO: [u8; 256] = fast_table(true);

/// The length of the instruction at the start of `code`, as [`decode`] gives it (None where
/// it leaves the instruction to iced), for the instruction boundaries every diff reads
/// (`Arch::decode`): instructions with no legacy prefix (a REX is fine) and an opcode whose
/// length and validity the tables above settle are measured without building an [`Inst`];
/// the rest go through [`decode`].
pub(super) fn length(code: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut b = *code.first()?;
    let mut rex_w = false;
    if b & 0xf0 == 0x40 {
        rex_w = b & 8 != 0;
        at = 1;
        b = *code.get(1)?;
    }
    let f = if b == 0x0f {
        at += 2;
        FAST_TWO[usize::from(*code.get(at - 1)?)]
    } else {
        at += 1;
        FAST_ONE[usize::from(b)]
    };
    if f & FAST == 0 {
        return decode(code).map(|i| i.len);
    }
    if f & MODRM != 0 {
        let m = *code.get(at)?;
        at += 1;
        let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
        if (f & REG0 != 0 && reg != 0) || (f & MEM != 0 && md == 3) {
            return decode(code).map(|i| i.len);
        }
        if md != 3 {
            if rm == 4 {
                let s = *code.get(at)?;
                at += 1;
                if md == 0 && s & 7 == 5 {
                    at += 4;
                }
            } else if md == 0 && rm == 5 {
                at += 4;
            }
            at += match md {
                1 => 1,
                2 => 4,
                _ => 0,
            };
        }
    }
    at += if f & IMM_V != 0 && rex_w {
        8
    } else {
        usize::from((f >> IMM_SHIFT) & 7)
    };
    (at <= code.len() && at <= 15).then_some(at)
}

/// The SIB byte and displacement of a ModRM memory operand (`md` != 3) starting at `at`,
/// recorded in `i`; where the instruction goes on.
fn memory_operand(code: &[u8], mut at: usize, md: u8, rm: u8, i: &mut Inst) -> Option<usize> {
    let mut disp = match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let s = *code.get(at)?;
        i.sib = Some(s);
        at += 1;
        if md == 0 && s & 7 == 5 {
            disp = 4;
        }
    } else if md == 0 && rm == 5 {
        disp = 4;
    }
    let d = code.get(at..at + disp)?;
    i.disp = match disp {
        1 => d[0] as i8 as i64,
        4 => i32::from_le_bytes(d.try_into().ok()?) as i64,
        _ => 0,
    };
    i.disp_len = disp;
    Some(at + disp)
}

/// Decode the instruction at the start of `code`, or None to leave it to iced.
pub(super) fn decode(code: &[u8]) -> Option<Inst> {
    let mut i = Inst {
        len: 0,
        map: Map::One,
        op: 0,
        opsize16: false,
        lock: false,
        addr32: false,
        rep: 0,
        seg: 0,
        rex: 0,
        modrm: None,
        sib: None,
        disp: 0,
        disp_len: 0,
        imm: 0,
        imm_len: 0,
        imm_at: 0,
    };
    let mut at = 0;
    let byte = |at: usize| code.get(at).copied();
    // Legacy prefixes (each kind at most once, but `66` may repeat), then an optional REX.
    loop {
        match byte(at)? {
            0x66 => i.opsize16 = true,
            0x67 if !i.addr32 => i.addr32 = true,
            0xf0 if !i.lock => i.lock = true,
            b @ (0xf2 | 0xf3) if i.rep == 0 => i.rep = b,
            b @ (0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65) if i.seg == 0 => i.seg = b,
            0x67 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => return None,
            _ => break,
        }
        at += 1;
    }
    if let b @ 0x40..=0x4f = byte(at)? {
        i.rex = b;
        at += 1;
    }
    let op_at = at;
    let (modrm, imm) = match byte(at)? {
        0x0f => {
            i.map = Map::Two;
            i.op = byte(at + 1)?;
            match two_byte(i.op) {
                Some(d) => {
                    at += 2;
                    d
                }
                None => return ext(code, at, i),
            }
        }
        op => {
            i.op = op;
            at += 1;
            // `8F` with a `reg` field other than 0 is an XOP prefix.
            if op == 0x8f && (byte(at)? >> 3) & 7 != 0 {
                return None;
            }
            match one_byte(op) {
                Some(d) => d,
                None => return ext(code, at - 1, i),
            }
        }
    };
    if modrm {
        let m = byte(at)?;
        i.modrm = Some(m);
        at += 1;
        // `mov` to and from control and debug registers ignore `mod`: always registers.
        let reg_only = i.map == Map::Two && (0x20..=0x23).contains(&i.op);
        let (md, rm) = (m >> 6, m & 7);
        if md != 3 && !reg_only {
            at = memory_operand(code, at, md, rm, &mut i)?;
        }
    }
    let osz16 = i.opsize16 && !i.rex_w();
    let imm_len = match imm {
        Imm::None => match (i.map, i.op) {
            // `test` in group 3 has an immediate.
            (Map::One, 0xf6) if i.reg() <= 1 => 1,
            (Map::One, 0xf7) if i.reg() <= 1 => {
                if osz16 {
                    2
                } else {
                    4
                }
            }
            _ => 0,
        },
        Imm::B | Imm::Rel8 => 1,
        Imm::W => 2,
        Imm::Z => {
            if osz16 {
                2
            } else {
                4
            }
        }
        Imm::V => {
            if i.rex_w() {
                8
            } else if osz16 {
                2
            } else {
                4
            }
        }
        Imm::Rel32 => 4,
        Imm::Enter => 3,
        Imm::Moffs => 8,
    };
    let raw = code.get(at..at + imm_len)?;
    i.imm_at = at;
    i.imm_len = imm_len;
    i.imm = raw.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    at += imm_len;
    i.len = at;
    if at <= 15 && accepted(&i) {
        return Some(i);
    }
    // The system instructions of `0F 01`, `0F AE` and `0F C7` `accepted` does not know.
    if i.map == Map::Two && matches!(i.op, 0x01 | 0xae | 0xc7) {
        return ext(code, op_at, i);
    }
    None
}

// ---------------------------------------------------------------------------------------
// SSE, AVX, x87 and rare system instructions ([`Map::Ext`]): only their length is needed (the
// boundaries of every diff, a PC-relative field's end); each table accepts only encodings
// iced decodes as valid, which the tests check, and leaves the rest to iced.

/// What the ModRM operand of an [`ext`] opcode may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rm {
    Any,
    Mem,
    Reg,
}

/// A VEX field (L or W) an opcode requires, or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bit {
    Any,
    Zero,
    One,
}

impl Bit {
    fn allows(self, b: bool) -> bool {
        match self {
            Bit::Any => true,
            Bit::Zero => !b,
            Bit::One => b,
        }
    }
}

/// An [`ext`] opcode: its ModRM operand, an 8-bit immediate, the `reg` values allowed (a bit
/// each), and for VEX its L and W and whether it uses `vvvv` (else it must be 1111).
#[derive(Debug, Clone, Copy)]
struct Rule {
    rm: Rm,
    imm8: bool,
    /// With a memory operand.
    regs: u8,
    /// With a register operand (ModRM `mod` 3).
    reg_regs: u8,
    l: Bit,
    w: Bit,
    v: bool,
    /// VEX R, X and B must be 0 (the mask-register moves, whose `k` operands have no upper
    /// half).
    no_rxb: bool,
}

const fn rule(rm: Rm, imm8: bool) -> Rule {
    Rule {
        rm,
        imm8,
        regs: 0xff,
        reg_regs: 0xff,
        l: Bit::Any,
        w: Bit::Any,
        v: true,
        no_rxb: false,
    }
}

impl Rule {
    const fn regs(self, regs: u8) -> Rule {
        Rule {
            regs,
            reg_regs: regs,
            ..self
        }
    }
    /// The `reg` values allowed with a memory operand and with a register.
    const fn split(self, regs: u8, reg_regs: u8) -> Rule {
        Rule {
            regs,
            reg_regs,
            ..self
        }
    }
    const fn l(self, l: Bit) -> Rule {
        Rule { l, ..self }
    }
    const fn w(self, w: Bit) -> Rule {
        Rule { w, ..self }
    }
    const fn no_rxb(self) -> Rule {
        Rule {
            no_rxb: true,
            ..self
        }
    }
    /// `vvvv` is not an operand: it must be 1111.
    const fn nov(self) -> Rule {
        Rule { v: false, ..self }
    }
}

const ANY: Rule = rule(Rm::Any, false);
const MEM_ONLY: Rule = rule(Rm::Mem, false);
const REG: Rule = rule(Rm::Reg, false);
const ANY_IB: Rule = rule(Rm::Any, true);
const REG_IB: Rule = rule(Rm::Reg, true);

/// `0F xx` with its mandatory prefix `pp` (0: none, 1: `66`, 2: `F3`, 3: `F2`): SSE and SSE2,
/// and system instructions `two_byte` does not have.
fn sse(op: u8, pp: u8) -> Option<Rule> {
    Some(match (pp, op) {
        (_, 0x10 | 0x11) => ANY,
        (0, 0x12 | 0x16) => ANY,
        (0 | 1, 0x13 | 0x17) | (1, 0x12 | 0x16) => MEM_ONLY,
        (2, 0x12 | 0x16) | (3, 0x12) => ANY,
        (0 | 1, 0x14 | 0x15 | 0x28 | 0x29 | 0x2e | 0x2f) => ANY,
        (0 | 1, 0x2b) => MEM_ONLY,
        (2 | 3, 0x2a | 0x2c | 0x2d) => ANY,
        (_, 0x51 | 0x58 | 0x59 | 0x5a | 0x5c..=0x5f) => ANY,
        (0 | 2, 0x52 | 0x53) => ANY,
        (0 | 1, 0x54..=0x57) => ANY,
        (0..=2, 0x5b) => ANY,
        (1, 0x60..=0x6d) => ANY,
        (1, 0x6e | 0x7e) | (2, 0x7e) => ANY,
        (1 | 2, 0x6f | 0x7f) => ANY,
        (_, 0x70) => ANY_IB,
        (1, 0x71 | 0x72) => REG_IB.regs(0b0101_0100),
        (1, 0x73) => REG_IB.regs(0b1100_1100),
        (1, 0x74..=0x76) => ANY,
        (1 | 3, 0x7c | 0x7d | 0xd0) => ANY,
        (_, 0xc2) => ANY_IB,
        (0 | 1, 0xc6) => ANY_IB,
        (1, 0xc4) => ANY_IB,
        (1, 0xc5) => REG_IB,
        (1, 0xd1..=0xd6 | 0xd8..=0xdf | 0xe0..=0xe5 | 0xe8..=0xef | 0xf1..=0xf6 | 0xf8..=0xfe) => {
            ANY
        }
        (1, 0xd7 | 0xf7) => REG,
        (1..=3, 0xe6) => ANY,
        (1, 0xe7) | (3, 0xf0) => MEM_ONLY,
        // MMX.
        (
            0,
            0x60..=0x6b
            | 0x6e
            | 0x6f
            | 0x74..=0x77
            | 0x7e
            | 0x7f
            | 0xd1..=0xd5
            | 0xd8..=0xdf
            | 0xe0..=0xe5
            | 0xe8..=0xef
            | 0xf1..=0xf6
            | 0xf8..=0xfe,
        ) => ANY,
        (0, 0x71 | 0x72) => REG_IB.regs(0b0101_0100),
        (0, 0x73) => REG_IB.regs(0b0100_0100),
        // sldt, str, lldt, ltr, verr, verw; lkgs; lar, lsl; vmread, vmwrite.
        (0, 0x00) => ANY.regs(0x3f),
        (1, 0x00) => ANY.regs(0x03),
        (3, 0x00) => ANY.regs(0x40),
        (0, 0x02 | 0x03 | 0x78 | 0x79) => ANY,
        // rdfsbase, rdgsbase, wrfsbase, wrgsbase; clwb, clflushopt.
        (2, 0xae) => REG.regs(0x0f),
        // clwb, clflushopt; tpause.
        (1, 0xae) => ANY.split(0xc0, 0b0100_0000),
        // xrstors, xsavec, xsaves, vmptrld, vmptrst; vmclear; rdpid.
        (0, 0xc7) => MEM_ONLY.regs(0b1111_1000),
        (1, 0xc7) => MEM_ONLY.regs(0b0100_0000),
        // vmxon; rdpid.
        (2, 0xc7) => ANY.split(0b0100_0000, 0b1000_0000),
        _ => return None,
    })
}

/// `0F 38 xx` with its mandatory prefix.
fn map38(op: u8, pp: u8) -> Option<Rule> {
    Some(match (pp, op) {
        (
            1,
            0x00..=0x0b
            | 0x10
            | 0x14
            | 0x15
            | 0x17
            | 0x1c..=0x1e
            | 0x20..=0x25
            | 0x28
            | 0x29
            | 0x2b
            | 0x30..=0x35
            | 0x37..=0x41
            | 0xdb..=0xdf,
        ) => ANY,
        // movntdqa; invept, invvpid, invpcid.
        (1, 0x2a | 0x80..=0x82) => MEM_ONLY,
        // sha1 and sha256.
        (0, 0xc8..=0xcd) => ANY,
        // movbe; crc32.
        (0, 0xf0 | 0xf1) => MEM_ONLY,
        (3, 0xf0 | 0xf1) | (4, 0xf1) => ANY,
        // adcx, adox.
        (1 | 2, 0xf6) => ANY,
        _ => return None,
    })
}

/// `0F 3A xx` with its mandatory prefix: every one has an 8-bit immediate.
fn map3a(op: u8, pp: u8) -> Option<Rule> {
    Some(match (pp, op) {
        (1, 0x08..=0x0f | 0x14..=0x17 | 0x20..=0x22 | 0x40..=0x42 | 0x44 | 0x60..=0x63 | 0xdf) => {
            ANY_IB
        }
        (0, 0xcc) => ANY_IB,
        _ => return None,
    })
}

/// A VEX opcode of `map` (1: `0F`, 2: `0F 38`, 3: `0F 3A`) with its `pp`.
fn vex(map: u8, op: u8, pp: u8) -> Option<Rule> {
    use Bit::{One, Zero};
    Some(match (map, pp, op) {
        (1, 0 | 1, 0x10 | 0x11 | 0x28 | 0x29) => ANY.nov(),
        (1, 0 | 1, 0x14 | 0x15 | 0x54..=0x59 | 0x5c..=0x5f) => ANY,
        (1, 2 | 3, 0x51 | 0x58 | 0x59 | 0x5c..=0x5f) => ANY,
        (1, 1, 0x60..=0x6d | 0x74..=0x76) => ANY,
        (1, 1, 0x6e | 0x7e | 0xd6) | (1, 2, 0x7e) => ANY.nov().l(Zero),
        (1, 1 | 2, 0x6f | 0x7f) => ANY.nov(),
        (1, 1..=3, 0x70) => ANY_IB.nov(),
        (1, 1, 0x71 | 0x72) => REG_IB.regs(0b0101_0100),
        (1, 1, 0x73) => REG_IB.regs(0b1100_1100),
        (1, _, 0xc2) | (1, 0 | 1, 0xc6) => ANY_IB,
        (
            1,
            1,
            0xd1..=0xd5 | 0xd8..=0xdf | 0xe0..=0xe5 | 0xe8..=0xef | 0xf1..=0xf6 | 0xf8..=0xfe,
        ) => ANY,
        (1, 1, 0xd7) => REG.nov(),
        // kmovw, kmovb, kmovq, kmovd.
        (1, 0 | 1, 0x90) => ANY.nov().l(Zero).no_rxb(),
        (1, 0 | 1, 0x91) => MEM_ONLY.nov().l(Zero).no_rxb(),
        (1, 0 | 1, 0x92 | 0x93) => REG.nov().l(Zero).w(Zero).no_rxb(),
        (1, 3, 0x92 | 0x93) => REG.nov().l(Zero).no_rxb(),
        (1, 1, 0xe7) => MEM_ONLY.nov(),
        (2, 1, 0x00..=0x0b | 0x28 | 0x29 | 0x2b | 0x37..=0x40 | 0x45 | 0x47) => ANY,
        (2, 1, 0x46) => ANY.w(Zero),
        (2, 1, 0x0c | 0x0d) => ANY.w(Zero),
        (2, 1, 0x16 | 0x36) => ANY.l(One).w(Zero),
        (2, 1, 0x17 | 0x1c..=0x1e | 0x20..=0x25 | 0x30..=0x35) => ANY.nov(),
        (2, 1, 0x18 | 0x58 | 0x59 | 0x78 | 0x79) => ANY.nov().w(Zero),
        (2, 1, 0x19) => ANY.nov().w(Zero).l(One),
        (2, 1, 0x2a) => MEM_ONLY.nov(),
        (2, 1, 0x5a) => MEM_ONLY.nov().w(Zero).l(One),
        (2, 1, 0x41) => ANY.nov().l(Zero),
        (2, 1, 0x96..=0x9f | 0xa6..=0xaf | 0xb6..=0xbf | 0xdc..=0xdf) => ANY,
        (2, 1, 0xdb) => ANY.nov().l(Zero),
        // andn, bzhi, pext, pdep, mulx, bextr, shlx, sarx, shrx.
        (2, 0, 0xf2 | 0xf5) | (2, 2 | 3, 0xf5) | (2, 3, 0xf6) | (2, _, 0xf7) => ANY.l(Zero),
        (2, 0, 0xf3) => ANY.l(Zero).regs(0b1110),
        (3, 1, 0x00 | 0x01) => ANY_IB.nov().l(One).w(One),
        (3, 1, 0x02) => ANY_IB.w(Zero),
        (3, 1, 0x04 | 0x05) => ANY_IB.nov().w(Zero),
        (3, 1, 0x06 | 0x18 | 0x38 | 0x46) => ANY_IB.l(One).w(Zero),
        (3, 1, 0x19 | 0x39) => ANY_IB.nov().l(One).w(Zero),
        (3, 1, 0x08 | 0x09) => ANY_IB.nov(),
        (3, 1, 0x0a..=0x0f | 0x40 | 0x42 | 0x44) => ANY_IB,
        (3, 1, 0x4a..=0x4c) => ANY_IB.w(Zero),
        (3, 1, 0x14..=0x17 | 0x60..=0x63 | 0xdf) => ANY_IB.nov().l(Zero),
        (3, 1, 0x20..=0x22 | 0x41) => ANY_IB.l(Zero),
        (3, 3, 0xf0) => ANY_IB.nov().l(Zero),
        _ => return None,
    })
}

/// An x87 instruction (`op` D8..DF) with this ModRM byte that iced decodes.
fn x87(op: u8, modrm: u8) -> bool {
    let reg = (modrm >> 3) & 7;
    if modrm >> 6 != 3 {
        return match op {
            0xd9 => reg != 1,
            0xdb => !matches!(reg, 4 | 6),
            0xdd => reg != 5,
            _ => true,
        };
    }
    // fld st(i), fxch; fstp st(i); fchs, fabs, the constants; fnclex, fninit.
    match op {
        0xd8 => true,
        0xd9 => {
            matches!(modrm, 0xc0..=0xd0 | 0xe0 | 0xe1 | 0xe4 | 0xe5 | 0xe8..=0xee | 0xf0..=0xff)
        }
        0xda => matches!(modrm, 0xc0..=0xdf | 0xe9),
        0xdb => matches!(modrm, 0xc0..=0xdf | 0xe2 | 0xe3 | 0xe8..=0xf7),
        0xdc => matches!(modrm, 0xc0..=0xcf | 0xe0..=0xff),
        0xdd => matches!(modrm, 0xc0..=0xc7 | 0xd0..=0xef),
        0xde => matches!(modrm, 0xc0..=0xcf | 0xd9 | 0xe0..=0xff),
        0xdf => matches!(modrm, 0xe0 | 0xe8..=0xf7),
        _ => false,
    }
}

/// The `0F 01` register forms `accepted` leaves out that iced decodes: vmcall, vmlaunch,
/// vmresume, vmxoff, xend, xtest, vmrun, vmmcall, vmload, vmsave, stgi, clgi, invlpga.
const SYSTEM_0F01: &[u8] = &[
    0xc1, 0xc2, 0xc3, 0xc4, 0xd5, 0xd6, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xdf, 0xfa, 0xfb,
];

/// Decode an SSE, AVX, x87 or system instruction ([`Map::Ext`]) whose opcode starts at
/// `op_at`, with the legacy prefixes and REX `p` holds, or None to leave it to iced.
fn ext(code: &[u8], op_at: usize, p: Inst) -> Option<Inst> {
    let byte = |at: usize| code.get(at).copied();
    let mut i = Inst {
        map: Map::Ext,
        modrm: None,
        sib: None,
        disp: 0,
        disp_len: 0,
        imm: 0,
        imm_len: 0,
        imm_at: 0,
        len: 0,
        ..p
    };
    if i.lock || i.addr32 {
        return None;
    }
    let pp = match (i.opsize16, i.rep) {
        (false, 0) => 0,
        (true, 0) => 1,
        (false, 0xf3) => 2,
        (false, 0xf2) => 3,
        // `crc32` of a 16-bit operand; no other table has it.
        (true, 0xf2) => 4,
        _ => return None,
    };
    let mut at = op_at;
    let done = |mut i: Inst, at: usize| {
        i.len = at;
        (at <= 15).then_some(i)
    };
    let first = byte(at)?;
    let rule = match first {
        0xc4 | 0xc5 if i.rex == 0 && pp == 0 => {
            let b1 = byte(at + 1)?;
            let (map, last) = if first == 0xc5 {
                (1, b1)
            } else {
                (b1 & 0x1f, byte(at + 2)?)
            };
            let w = first == 0xc4 && last & 0x80 != 0;
            let vvvv = (!last >> 3) & 15;
            let l = (last >> 2) & 1 != 0;
            let vpp = last & 3;
            at += if first == 0xc5 { 2 } else { 3 };
            i.op = byte(at)?;
            at += 1;
            if map == 1 && i.op == 0x77 && vpp == 0 && vvvv == 0 {
                // vzeroupper, vzeroall.
                return done(i, at);
            }
            let r = vex(map, i.op, vpp)?;
            // R, X and B, stored inverted (C5 has only R).
            let rxb = if first == 0xc5 { b1 & 0x80 } else { b1 & 0xe0 };
            let full = if first == 0xc5 { 0x80 } else { 0xe0 };
            if (!r.v && vvvv != 0) || !r.l.allows(l) || !r.w.allows(w) || (r.no_rxb && rxb != full)
            {
                return None;
            }
            r
        }
        0x0f => {
            let op = byte(at + 1)?;
            match op {
                0x38 | 0x3a => {
                    i.op = byte(at + 2)?;
                    at += 3;
                    if op == 0x38 {
                        map38(i.op, pp)?
                    } else {
                        map3a(i.op, pp)?
                    }
                }
                // emms.
                0x77 if pp == 0 => {
                    i.op = op;
                    return done(i, at + 2);
                }
                0x01 => {
                    let m = byte(at + 2)?;
                    if pp != 0 || !SYSTEM_0F01.contains(&m) {
                        return None;
                    }
                    i.op = op;
                    i.modrm = Some(m);
                    return done(i, at + 3);
                }
                _ if pp == 4 => return None,
                _ => {
                    i.op = op;
                    at += 2;
                    sse(op, pp)?
                }
            }
        }
        0xd8..=0xdf if pp == 0 => {
            i.op = first;
            at += 1;
            if !x87(first, byte(at)?) {
                return None;
            }
            ANY
        }
        _ => return None,
    };
    let m = byte(at)?;
    i.modrm = Some(m);
    at += 1;
    let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
    let ok = match rule.rm {
        Rm::Any => true,
        Rm::Mem => md != 3,
        Rm::Reg => md == 3,
    };
    let regs = if md == 3 { rule.reg_regs } else { rule.regs };
    if !ok || regs & (1 << reg) == 0 {
        return None;
    }
    if md != 3 {
        at = memory_operand(code, at, md, rm, &mut i)?;
    }
    if rule.imm8 {
        i.imm = u64::from(byte(at)?);
        i.imm_len = 1;
        i.imm_at = at;
        at += 1;
    }
    done(i, at)
}

// ---------------------------------------------------------------------------------------
// Formatting, as iced's IntelFormatter with klpgen's options (hex prefix `0x`, lowercase
// digits, a space after each operand separator) and its symbol resolver (`RelocResolver`:
// relocation labels for operands whose value is the field's, a PC-relative one's being the
// instruction's end).

const REG8: [&str; 16] = [
    "al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b",
    "r13b", "r14b", "r15b",
];
const REG8_LEGACY: [&str; 8] = ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh"];
const REG16: [&str; 16] = [
    "ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w",
    "r14w", "r15w",
];
const REG32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d",
    "r13d", "r14d", "r15d",
];
const REG64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const ALU: [&str; 8] = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"];
// iced writes `/6` (SAL) as `shl`.
const SHIFT: [&str; 8] = ["rol", "ror", "rcl", "rcr", "shl", "shr", "shl", "sar"];
const GROUP3: [&str; 8] = ["test", "test", "not", "neg", "mul", "imul", "div", "idiv"];
const CC: [&str; 16] = [
    "o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g",
];

/// A register of `size` bits, numbered 0..=15; `rex`: whether the instruction has a REX
/// prefix (which makes 4..=7 `spl`..`dil` instead of `ah`..`bh`).
fn reg_name(size: u8, n: u8, rex: bool) -> &'static str {
    let n = usize::from(n & 15);
    match size {
        8 if rex => REG8[n],
        8 => REG8_LEGACY[n & 7],
        16 => REG16[n],
        32 => REG32[n],
        _ => REG64[n],
    }
}

/// A number as iced writes it with klpgen's options: 0 to 9 in decimal, else `0x` and
/// lowercase hex digits.
fn number(v: u64) -> String {
    if v <= 9 {
        v.to_string()
    } else {
        format!("{v:#x}")
    }
}

/// One operand, before the symbol resolver has seen it.
enum Operand {
    Reg(&'static str),
    /// The ModRM memory operand: the size keyword to show, if any.
    Mem(Option<&'static str>),
    /// An immediate: the value the resolver sees and the text of its number (the value at the
    /// operand's size).
    Imm {
        value: u64,
        shown: u64,
    },
    /// A branch target; `short`: the `short` keyword (a rel8 branch).
    Branch {
        target: u64,
        short: bool,
    },
    /// A constant iced shows without asking the resolver (`shl eax, 1`).
    Text(&'static str),
}

/// The text of the instruction at `ip` as iced's Intel formatter writes it with klpgen's
/// options and relocation labels, and how many labels it used; None when this file does not
/// know the instruction's text.
pub(super) fn format(i: &Inst, ip: u64, labels: &[OperandLabel]) -> Option<(String, usize)> {
    // Prefixes iced would show, or that change the instruction, are left to it.
    if i.seg != 0 || i.addr32 {
        return None;
    }
    let (mnemonic, ops) = operands(i, ip)?;
    let next_ip = ip.wrapping_add(i.len as u64);
    let mut taken = vec![false; labels.len()];
    // The resolver is asked for each operand in order; the first unused label with the
    // operand's value (the instruction's end for a PC-relative one, 0 for an absolute one)
    // names it.
    let mut take = |address: u64| -> Option<&str> {
        let k = labels.iter().enumerate().position(|(k, l)| {
            !taken[k]
                && if l.pc_relative {
                    address == next_ip
                } else {
                    address == 0
                }
        })?;
        taken[k] = true;
        Some(labels[k].text.as_str())
    };
    let mut text = String::new();
    if i.lock {
        text.push_str("lock ");
    }
    text.push_str(&mnemonic);
    for (k, op) in ops.iter().enumerate() {
        text.push_str(if k == 0 { " " } else { ", " });
        match op {
            Operand::Reg(r) => text.push_str(r),
            Operand::Text(t) => text.push_str(t),
            Operand::Imm { value, shown } => match take(*value) {
                Some(l) => text.push_str(l),
                None => text.push_str(&number(*shown)),
            },
            Operand::Branch { target, short } => {
                if *short {
                    text.push_str("short ");
                }
                // 16 hex digits, but 0 to 9 in decimal like any number.
                match take(*target) {
                    Some(l) => text.push_str(l),
                    None if *target <= 9 => text.push_str(&target.to_string()),
                    None => text.push_str(&format!("{target:#018x}")),
                }
            }
            Operand::Mem(size) => {
                let rip = i.mod_() == 0 && i.rm() == 5;
                let address = if rip {
                    next_ip.wrapping_add(i.disp as u64)
                } else {
                    i.disp as u64
                };
                let symbol = take(address);
                if let Some(s) = size {
                    text.push_str(s);
                    text.push(' ');
                }
                text.push('[');
                text.push_str(&memory(i, rip, address, symbol)?);
                text.push(']');
            }
        }
    }
    Some((text, taken.iter().filter(|&&t| t).count()))
}

/// The inside of a memory operand's brackets.
fn memory(i: &Inst, rip: bool, address: u64, symbol: Option<&str>) -> Option<String> {
    let mut out = String::new();
    let (mut base, mut index, mut scale) = (None, None, 0u8);
    if rip {
        // RIP-relative: iced shows the absolute address (or its symbol).
    } else if let Some(s) = i.sib {
        let b = s & 7;
        let x = ((s >> 3) & 7) | (i.rex_x() << 3);
        if !(b == 5 && i.mod_() == 0) {
            base = Some(b | (i.rex_b() << 3));
        }
        if x != 4 {
            index = Some(x);
            scale = s >> 6;
        }
    } else {
        base = Some(i.rm() | (i.rex_b() << 3));
    }
    let mut need_plus = false;
    if let Some(b) = base {
        out.push_str(REG64[usize::from(b)]);
        need_plus = true;
    }
    if let Some(x) = index {
        if need_plus {
            out.push('+');
        }
        out.push_str(REG64[usize::from(x)]);
        // `[rsi*1]` only without a base.
        if scale != 0 || base.is_none() {
            out.push('*');
            out.push_str(["1", "2", "4", "8"][usize::from(scale)]);
        }
        need_plus = true;
    }
    if let Some(s) = symbol {
        if need_plus {
            out.push('+');
        }
        out.push_str(s);
    } else if rip {
        out.push_str(&number(address));
    } else if !need_plus {
        out.push_str(&number(i.disp as u64));
    } else if i.disp_len != 0 && i.disp != 0 {
        if i.disp < 0 {
            out.push('-');
            out.push_str(&number(i.disp.unsigned_abs()));
        } else {
            out.push('+');
            out.push_str(&number(i.disp as u64));
        }
    }
    Some(out)
}

/// The size keyword of a memory operand of `size` bits.
fn ptr(size: u8) -> &'static str {
    match size {
        8 => "byte ptr",
        16 => "word ptr",
        32 => "dword ptr",
        _ => "qword ptr",
    }
}

/// The mnemonic and operands of the instructions this file formats.
fn operands(i: &Inst, ip: u64) -> Option<(String, Vec<Operand>)> {
    let rex = i.rex != 0;
    let w = i.rex_w();
    // The operand size of instructions with a 32-bit default.
    let v: u8 = if w {
        64
    } else if i.opsize16 {
        16
    } else {
        32
    };
    let reg = i.reg() | (i.rex_r() << 3);
    let rm = i.rm() | (i.rex_b() << 3);
    // Operand `E` (ModRM r/m) of `size` bits; `sized`: whether a memory operand shows its size.
    let e = |size: u8, sized: bool| -> Operand {
        if i.is_mem() {
            Operand::Mem(sized.then(|| ptr(size)))
        } else {
            Operand::Reg(reg_name(size, rm, rex))
        }
    };
    let g = |size: u8| Operand::Reg(reg_name(size, reg, rex));
    // Immediates: 8-bit, and the `Iz`/sign-extended forms at operand size `size`.
    let imm8 = || Operand::Imm {
        value: i.imm & 0xff,
        shown: i.imm & 0xff,
    };
    let imm_at = |size: u8| -> Operand {
        let raw = i.imm;
        let signed = match i.imm_len {
            1 => raw as u8 as i8 as i64,
            2 => raw as u16 as i16 as i64,
            4 => raw as u32 as i32 as i64,
            _ => raw as i64,
        };
        let value = match size {
            8 => raw & 0xff,
            16 => signed as u64 & 0xffff,
            32 => signed as u64 & 0xffff_ffff,
            _ => signed as u64,
        };
        Operand::Imm {
            value,
            shown: value,
        }
    };
    let rel = |short: bool| -> Operand {
        let (_, target, _) = i.flow(ip);
        Operand::Branch { target, short }
    };
    let m = |s: &str| s.to_string();
    // Formats this file writes only without F2/F3 (their meaning changes with them).
    let no_rep = i.rep == 0;
    let out = match i.map {
        Map::Ext => return None,
        Map::One => match i.op {
            0x00..=0x3f if no_rep => {
                let name = m(ALU[usize::from(i.op >> 3)]);
                match i.op & 7 {
                    0 => (name, vec![e(8, false), g(8)]),
                    1 => (name, vec![e(v, false), g(v)]),
                    2 => (name, vec![g(8), e(8, false)]),
                    3 => (name, vec![g(v), e(v, false)]),
                    4 => (name, vec![Operand::Reg("al"), imm8()]),
                    _ => (name, vec![Operand::Reg(reg_name(v, 0, rex)), imm_at(v)]),
                }
            }
            0x50..=0x5f if no_rep && !i.opsize16 => {
                let name = if i.op < 0x58 { "push" } else { "pop" };
                let r = (i.op & 7) | (i.rex_b() << 3);
                (m(name), vec![Operand::Reg(REG64[usize::from(r)])])
            }
            0x63 if no_rep && w => (m("movsxd"), vec![g(64), e(32, false)]),
            0x68 | 0x6a if no_rep && !i.opsize16 => (m("push"), vec![imm_at(64)]),
            // `imul r, r, imm` with the same register twice is written `imul r, imm`.
            0x69 | 0x6b if no_rep && !i.is_mem() && reg == rm => (m("imul"), vec![g(v), imm_at(v)]),
            0x69 | 0x6b if no_rep => (m("imul"), vec![g(v), e(v, false), imm_at(v)]),
            0x70..=0x7f if no_rep => (format!("j{}", CC[usize::from(i.op & 15)]), vec![rel(true)]),
            0x80 if no_rep => (m(ALU[usize::from(i.reg())]), vec![e(8, true), imm8()]),
            0x81 | 0x83 if no_rep => (m(ALU[usize::from(i.reg())]), vec![e(v, true), imm_at(v)]),
            0x84 if no_rep => (m("test"), vec![e(8, false), g(8)]),
            0x85 if no_rep => (m("test"), vec![e(v, false), g(v)]),
            0x86 if no_rep => (m("xchg"), vec![e(8, false), g(8)]),
            0x87 if no_rep => (m("xchg"), vec![e(v, false), g(v)]),
            0x88 if no_rep => (m("mov"), vec![e(8, false), g(8)]),
            0x89 if no_rep => (m("mov"), vec![e(v, false), g(v)]),
            0x8a if no_rep => (m("mov"), vec![g(8), e(8, false)]),
            0x8b if no_rep => (m("mov"), vec![g(v), e(v, false)]),
            0x8d if no_rep => (m("lea"), vec![g(v), Operand::Mem(None)]),
            0x90 if i.rex == 0 && !i.opsize16 => match i.rep {
                0 => none_named("nop"),
                0xf3 => none_named("pause"),
                _ => return None,
            },
            0x98 if no_rep => none_named(match v {
                64 => "cdqe",
                16 => "cbw",
                _ => "cwde",
            }),
            0x99 if no_rep => none_named(match v {
                64 => "cqo",
                16 => "cwd",
                _ => "cdq",
            }),
            0xa8 if no_rep => (m("test"), vec![Operand::Reg("al"), imm8()]),
            0xa9 if no_rep => (
                m("test"),
                vec![Operand::Reg(reg_name(v, 0, rex)), imm_at(v)],
            ),
            0xb0..=0xb7 if no_rep => (
                m("mov"),
                vec![
                    Operand::Reg(reg_name(8, (i.op & 7) | (i.rex_b() << 3), rex)),
                    imm8(),
                ],
            ),
            0xb8..=0xbf if no_rep => (
                m("mov"),
                vec![
                    Operand::Reg(reg_name(v, (i.op & 7) | (i.rex_b() << 3), rex)),
                    imm_at(v),
                ],
            ),
            0xc0 | 0xc1 | 0xd0..=0xd3 if no_rep => {
                let size = if i.op & 1 == 0 { 8 } else { v };
                let count = match i.op {
                    0xc0 | 0xc1 => imm8(),
                    0xd0 | 0xd1 => Operand::Text("1"),
                    _ => Operand::Reg("cl"),
                };
                (m(SHIFT[usize::from(i.reg())]), vec![e(size, true), count])
            }
            0xc3 if no_rep && !i.opsize16 => none_named("ret"),
            0xc6 if no_rep => (m("mov"), vec![e(8, true), imm8()]),
            0xc7 if no_rep => (m("mov"), vec![e(v, true), imm_at(v)]),
            0xc9 if no_rep && !i.opsize16 => none_named("leave"),
            0xcc if no_rep => none_named("int3"),
            0xe8 if no_rep => (m("call"), vec![rel(false)]),
            0xe9 if no_rep => (m("jmp"), vec![rel(false)]),
            0xeb if no_rep => (m("jmp"), vec![rel(true)]),
            0xf4 if no_rep => none_named("hlt"),
            0xf5 if no_rep => none_named("cmc"),
            0xf6 | 0xf7 if no_rep => {
                let size = if i.op == 0xf6 { 8 } else { v };
                let mut ops = vec![e(size, true)];
                if i.reg() <= 1 {
                    ops.push(if size == 8 { imm8() } else { imm_at(size) });
                }
                (m(GROUP3[usize::from(i.reg())]), ops)
            }
            0xf8..=0xfd if no_rep => {
                none_named(["clc", "stc", "cli", "sti", "cld", "std"][usize::from(i.op - 0xf8)])
            }
            0xfe if no_rep => (m(["inc", "dec"][usize::from(i.reg())]), vec![e(8, true)]),
            0xff if no_rep => match i.reg() {
                0 | 1 => (m(["inc", "dec"][usize::from(i.reg())]), vec![e(v, true)]),
                2 | 4 if !i.opsize16 => {
                    let name = if i.reg() == 2 { "call" } else { "jmp" };
                    (m(name), vec![e(64, true)])
                }
                6 if !i.opsize16 => (m("push"), vec![e(64, true)]),
                _ => return None,
            },
            _ => return None,
        },
        Map::Two => match i.op {
            0x05 => none_named("syscall"),
            0x0b if no_rep => none_named("ud2"),
            0x30 => none_named("wrmsr"),
            0x31 => none_named("rdtsc"),
            0x32 => none_named("rdmsr"),
            0xa2 => none_named("cpuid"),
            0x01 => match i.modrm? {
                0xca => none_named("clac"),
                0xcb => none_named("stac"),
                0xf8 => none_named("swapgs"),
                _ => return None,
            },
            0xae => match i.modrm? {
                0xe8 => none_named("lfence"),
                0xf0 => none_named("mfence"),
                0xf8 => none_named("sfence"),
                _ => return None,
            },
            0x1e => none_named("endbr64"),
            0x1f if no_rep => (m("nop"), vec![e(v, false)]),
            0x40..=0x4f if no_rep => (
                format!("cmov{}", CC[usize::from(i.op & 15)]),
                vec![g(v), e(v, false)],
            ),
            0x80..=0x8f if no_rep => (format!("j{}", CC[usize::from(i.op & 15)]), vec![rel(false)]),
            0x90..=0x9f if no_rep && !i.opsize16 => (
                format!("set{}", CC[usize::from(i.op & 15)]),
                vec![e(8, false)],
            ),
            0xa3 | 0xab | 0xb3 | 0xbb if no_rep => {
                let name = match i.op {
                    0xa3 => "bt",
                    0xab => "bts",
                    0xb3 => "btr",
                    _ => "btc",
                };
                (m(name), vec![e(v, false), g(v)])
            }
            0xba if no_rep => (
                m(["bt", "bts", "btr", "btc"][usize::from(i.reg() - 4)]),
                vec![e(v, true), imm8()],
            ),
            0xaf if no_rep => (m("imul"), vec![g(v), e(v, false)]),
            0xb0 | 0xc0 if no_rep => {
                let name = if i.op == 0xb0 { "cmpxchg" } else { "xadd" };
                (m(name), vec![e(8, false), g(8)])
            }
            0xb1 | 0xc1 if no_rep => {
                let name = if i.op == 0xb1 { "cmpxchg" } else { "xadd" };
                (m(name), vec![e(v, false), g(v)])
            }
            0xb6 | 0xb7 | 0xbe | 0xbf if no_rep => {
                let name = if i.op < 0xbe { "movzx" } else { "movsx" };
                let size = if i.op & 1 == 0 { 8 } else { 16 };
                (m(name), vec![g(v), e(size, true)])
            }
            0xc8..=0xcf if no_rep && !i.opsize16 => {
                let r = (i.op & 7) | (i.rex_b() << 3);
                (m("bswap"), vec![Operand::Reg(reg_name(v, r, rex))])
            }
            _ => return None,
        },
    };
    Some(out)
}

/// An instruction without operands.
fn none_named(name: &str) -> (String, Vec<Operand>) {
    (name.to_string(), Vec::new())
}

#[cfg(test)]
mod tests {
    //! Every instruction this file accepts, held to iced: the same length, control flow,
    //! call and line-number load, end of flow, and, where this file formats it, the same text
    //! with the same labels used.
    use super::super::x86_64::iced_text;
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind};

    fn label_sets() -> Vec<Vec<OperandLabel>> {
        let l = |pc_relative: bool, text: &str| OperandLabel {
            pc_relative,
            text: text.into(),
        };
        vec![
            vec![],
            vec![l(true, "pc")],
            vec![l(false, "abs")],
            vec![l(false, "abs"), l(true, "pc")],
        ]
    }

    /// Compare one byte string; returns whether this file accepted it.
    fn check(bytes: &[u8], ip: u64) -> bool {
        assert_eq!(
            length(bytes),
            decode(bytes).map(|i| i.len),
            "{bytes:02x?}: length without decoding"
        );
        let Some(mine) = decode(bytes) else {
            return false;
        };
        let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        let insn = d.decode();
        assert!(!insn.is_invalid(), "{bytes:02x?}: iced says invalid");
        assert_eq!(mine.len, insn.len(), "{bytes:02x?}: length ({insn})");
        // Control flow as `decode_flow` reads it from iced.
        let direct = insn.op_count() == 1 && insn.op0_kind() == OpKind::NearBranch64;
        let want = match insn.code() {
            _ if !direct => Flow::Other,
            Code::Call_rel32_64 => Flow::Call,
            Code::Jmp_rel32_64 | Code::Jmp_rel8_64 => Flow::Jump,
            _ => Flow::CondJump,
        };
        let (flow, target, field) = mine.flow(ip);
        assert_eq!(flow, want, "{bytes:02x?}: flow ({insn})");
        if flow != Flow::Other {
            let offsets = d.get_constant_offsets(&insn);
            assert_eq!(target, insn.near_branch_target(), "{bytes:02x?}: target");
            assert_eq!(
                field,
                ip + offsets.immediate_offset() as u64,
                "{bytes:02x?}: field"
            );
        }
        assert_eq!(
            mine.is_call(),
            insn.mnemonic() == Mnemonic::Call,
            "{bytes:02x?}: call ({insn})"
        );
        let want = (insn.code() == Code::Mov_r32_imm32)
            .then(|| insn.op0_register() as u32 - iced_x86::Register::EAX as u32);
        assert_eq!(
            mine.mov_r32_imm32(),
            want,
            "{bytes:02x?}: mov $imm32 ({insn})"
        );
        // What `decode_insns` makes of it.
        let want = super::super::x86_64::iced_insn(bytes, 0);
        assert_eq!(
            mine.moved_immediate(),
            want.imm,
            "{bytes:02x?}: moved immediate ({insn})"
        );
        assert_eq!(
            mine.is_call() || mine.flow(ip).0 == Flow::Jump,
            want.call,
            "{bytes:02x?}: call or jump ({insn})"
        );
        let ends = matches!(
            insn.mnemonic(),
            Mnemonic::Jmp | Mnemonic::Ret | Mnemonic::Ud2 | Mnemonic::Int3
        );
        assert_eq!(mine.ends_flow(), ends, "{bytes:02x?}: end of flow ({insn})");
        for labels in label_sets() {
            if let Some(got) = format(&mine, ip, &labels) {
                let want = iced_text(&insn, &labels);
                if got != want {
                    if std::env::var_os("X86_FAST_ALL").is_some() {
                        eprintln!(
                            "MISMATCH {:?} {:02x} /{} {bytes:02x?} labels {}: {got:?} vs {want:?}",
                            mine.map,
                            mine.op,
                            mine.reg(),
                            labels.len()
                        );
                        continue;
                    }
                    panic!("{bytes:02x?}: text with labels {labels:?}: {got:?}, iced {want:?}");
                }
            }
        }
        true
    }

    /// A small deterministic generator (xorshift), so the test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    const PREFIXES: &[&[u8]] = &[
        &[],
        &[0x67],
        &[0x67, 0x48],
        &[0x66, 0x67],
        &[0xf0, 0x67],
        &[0x48],
        &[0x66],
        &[0x41],
        &[0x4c],
        &[0x4d],
        &[0x40],
        &[0xf0],
        &[0xf0, 0x48],
        &[0xf3],
        &[0xf3, 0x48],
        &[0xf2],
        &[0x66, 0x48],
        &[0x2e],
        &[0x3e],
        &[0x66, 0x2e],
        &[0x66, 0x66, 0x2e],
    ];

    /// Every header (prefixes and escapes) with every opcode and ModRM byte (`step` samples
    /// them: 1 is all) and, where the ModRM byte asks for one, each of `sibs`, the bytes
    /// after them from `rng`, through [`check`]; how many this file accepted.
    fn sweep_headers(headers: &[Vec<u8>], sibs: &[u8], step: usize, rng: &mut Rng) -> usize {
        let mut accepted = 0;
        for header in headers {
            for op in 0..=255u8 {
                for modrm in (0..=255u8).step_by(step) {
                    for &sib in sibs {
                        let mut b = header.clone();
                        b.extend([op, modrm, sib]);
                        while b.len() < 16 {
                            b.push(rng.byte());
                        }
                        let ip = 0x1000 + u64::from(rng.byte());
                        if check(&b, ip) {
                            accepted += 1;
                        }
                        if modrm & 7 != 4 || modrm >> 6 == 3 {
                            break;
                        }
                    }
                }
            }
        }
        accepted
    }

    /// Every prefix set of `PREFIXES`, in the one- and two-byte maps, through
    /// [`sweep_headers`].
    fn sweep(step: usize, rng: &mut Rng) -> usize {
        let headers: Vec<Vec<u8>> = PREFIXES
            .iter()
            .flat_map(|p| [p.to_vec(), [*p, &[0x0f][..]].concat()])
            .collect();
        sweep_headers(&headers, &[0x24, 0x25, 0x44, 0x98, 0xe5, 0x3c], step, rng)
    }

    /// The headers [`ext`] reads before an opcode byte: legacy prefixes with the `0F`,
    /// `0F 38` and `0F 3A` escapes and the one-byte map (x87), and VEX prefixes with every
    /// map, `pp`, L and W, and a few `vvvv` and R/X/B values.
    fn ext_headers() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let legacy: &[&[u8]] = &[
            &[],
            &[0x66],
            &[0xf3],
            &[0xf2],
            &[0x48],
            &[0x66, 0x48],
            &[0xf3, 0x48],
            &[0xf2, 0x48],
            &[0x66, 0xf3],
            &[0xf2, 0x66],
            &[0xf0, 0x66],
            &[0x66, 0x41],
            &[0x2e],
            &[0x67],
            &[0x67, 0x66],
        ];
        for p in legacy {
            for esc in [&[][..], &[0x0f], &[0x0f, 0x38], &[0x0f, 0x3a]] {
                out.push([*p, esc].concat());
            }
        }
        for r in [0x80u8, 0x00] {
            for vvvv in [0x78u8, 0x00, 0x50] {
                for l in [0, 4] {
                    for pp in 0..4 {
                        out.push(vec![0xc5, r | vvvv | l | pp]);
                        out.push(vec![0x66, 0xc5, r | vvvv | l | pp]);
                    }
                }
            }
        }
        for rxb in [0xe0u8, 0x00, 0x40] {
            for map in 0..5 {
                for w in [0, 0x80u8] {
                    for vvvv in [0x78u8, 0x00] {
                        for l in [0, 4] {
                            for pp in 0..4 {
                                out.push(vec![0xc4, rxb | map, w | vvvv | l | pp]);
                            }
                        }
                    }
                }
            }
        }
        out.push(vec![0x48, 0xc4, 0xe2, 0x78]);
        out
    }

    /// Every [`ext_headers`] header through [`sweep_headers`].
    fn sweep_ext(step: usize, rng: &mut Rng) -> usize {
        sweep_headers(&ext_headers(), &[0x24, 0x25, 0x98], step, rng)
    }

    /// SSE, AVX, x87 and system instructions ([`ext`]), held to iced on a sample of every
    /// header and opcode.
    #[test]
    fn extensions_agree_with_iced() {
        let mut rng = Rng(0x6a09_e667_f3bc_c909);
        assert!(
            sweep_ext(
                std::env::var("X86_FAST_STEP").map_or(23, |s| s.parse().unwrap()),
                &mut rng
            ) > 10_000
        );
    }

    #[test]
    fn agrees_with_iced_on_a_sample() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        assert!(sweep(7, &mut rng) > 10_000);
        // Random bytes, weighted towards prefixes and common opcodes.
        let common = [
            0x48, 0x89, 0x8b, 0x0f, 0xe8, 0x66, 0x41, 0xc7, 0x83, 0xf0, 0xff,
        ];
        for _ in 0..20_000 {
            let mut b: Vec<u8> = (0..16).map(|_| rng.byte()).collect();
            for x in b.iter_mut().take(3) {
                if rng.byte() < 128 {
                    *x = common[usize::from(rng.byte()) % common.len()];
                }
            }
            check(&b, rng.next() & 0xffff);
        }
    }

    /// The register forms of `0f 01` the kernel's inline assembly emits: decoded here, so a
    /// diff of an object with one does not build iced's tables (about 3 M instructions).
    #[test]
    fn system_instructions_of_the_kernel() {
        for modrm in [
            0xca, 0xcb, 0xf8, 0xf9, 0xd0, 0xd1, 0xe8, 0xc8, 0xc9, 0xee, 0xef,
        ] {
            let b = [0x0f, 0x01, modrm, 0x90, 0x90];
            assert!(check(&b, 0x1000), "{b:02x?} left to iced");
        }
    }

    /// One instruction of each kind (iced's `Code`) that real kernel objects and modules
    /// (Debian 6.1, 5.10 with gcc 10, xtask's test kernels) left to iced before [`ext`]:
    /// decoded here now, as iced decodes them.
    #[test]
    fn extensions_of_real_kernels() {
        let seen: &[&[u8]] = &[
            &[0x0f, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x00, 0x44, 0x24, 0x10],
            &[0x0f, 0x00, 0xca],
            &[0x0f, 0x00, 0xd0],
            &[0x0f, 0x00, 0xd8],
            &[0x0f, 0x01, 0xc1],
            &[0x0f, 0x01, 0xc2],
            &[0x0f, 0x01, 0xc3],
            &[0x0f, 0x01, 0xc4],
            &[0x0f, 0x01, 0xd8],
            &[0x0f, 0x01, 0xd9],
            &[0x0f, 0x01, 0xda],
            &[0x0f, 0x01, 0xdb],
            &[0x0f, 0x01, 0xdc],
            &[0x0f, 0x01, 0xdd],
            &[0x0f, 0x01, 0xdf],
            &[0x0f, 0x01, 0xfa],
            &[0x0f, 0x01, 0xfb],
            &[0x0f, 0x02, 0x87, 0xa0, 0x00, 0x00, 0x00],
            &[0x0f, 0x03, 0xc0],
            &[0x0f, 0x10, 0x36],
            &[0x0f, 0x11, 0x0f],
            &[0x0f, 0x14, 0xc1],
            &[0x0f, 0x16, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x16, 0xc1],
            &[0x0f, 0x17, 0x4c, 0x24, 0x60],
            &[0x0f, 0x28, 0x2d, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x29, 0x44, 0x24, 0x50],
            &[0x0f, 0x2e, 0x15, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x2f, 0xd0],
            &[0x0f, 0x38, 0xc8, 0xd4],
            &[0x0f, 0x38, 0xc9, 0xdc],
            &[0x0f, 0x38, 0xca, 0xde],
            &[0x0f, 0x38, 0xcb, 0xd1],
            &[0x0f, 0x38, 0xcc, 0xdc],
            &[0x0f, 0x38, 0xcd, 0xde],
            &[0x0f, 0x3a, 0xcc, 0xc1, 0x00],
            &[0x0f, 0x54, 0xf9],
            &[0x0f, 0x55, 0xc2],
            &[0x0f, 0x56, 0xc1],
            &[0x0f, 0x5a, 0xc0],
            &[0x0f, 0x5c, 0xc7],
            &[0x0f, 0x6f, 0x4d, 0x00],
            &[0x0f, 0x77],
            &[0x0f, 0x78, 0xc0],
            &[0x0f, 0x79, 0xc6],
            &[0x0f, 0x7f, 0x4d, 0x30],
            &[0x0f, 0xc2, 0xc8, 0x02],
            &[0x0f, 0xc6, 0xe0, 0x10],
            &[0x0f, 0xc7, 0x74, 0x24, 0x18],
            &[0x41, 0x0f, 0x13, 0x8f, 0x98, 0x17, 0x00, 0x00],
            &[0x41, 0x0f, 0x57, 0xc0],
            &[0x48, 0x0f, 0x03, 0xc0],
            &[0x48, 0x0f, 0xc7, 0x1f],
            &[0x48, 0x0f, 0xc7, 0x27],
            &[0x48, 0x0f, 0xc7, 0x2f],
            &[0x66, 0x0f, 0x00, 0xc2],
            &[0x66, 0x0f, 0x12, 0xa7, 0xd8, 0x15, 0x00, 0x00],
            &[0x66, 0x0f, 0x13, 0xad, 0x88, 0xfd, 0xff, 0xff],
            &[0x66, 0x0f, 0x14, 0xc0],
            &[0x66, 0x0f, 0x15, 0xed],
            &[0x66, 0x0f, 0x17, 0xad, 0x68, 0xfd, 0xff, 0xff],
            &[0x66, 0x0f, 0x28, 0xd1],
            &[0x66, 0x0f, 0x2e, 0xc8],
            &[0x66, 0x0f, 0x2f, 0xca],
            &[0x66, 0x0f, 0x38, 0x00, 0xc1],
            &[0x66, 0x0f, 0x38, 0x10, 0xca],
            &[0x66, 0x0f, 0x38, 0x2a, 0x00],
            &[0x66, 0x0f, 0x38, 0x35, 0x04, 0x07],
            &[0x66, 0x0f, 0x38, 0x80, 0x04, 0x24],
            &[0x66, 0x0f, 0x38, 0x81, 0x04, 0x24],
            &[0x66, 0x0f, 0x38, 0x82, 0x04, 0x24],
            &[0x66, 0x0f, 0x38, 0xdb, 0xc8],
            &[0x66, 0x0f, 0x38, 0xdc, 0xe0],
            &[0x66, 0x0f, 0x38, 0xde, 0xc2],
            &[0x66, 0x0f, 0x38, 0xdf, 0xc2],
            &[0x66, 0x0f, 0x3a, 0x0e, 0xd7, 0xf0],
            &[0x66, 0x0f, 0x3a, 0x0f, 0xe9, 0x08],
            &[0x66, 0x0f, 0x3a, 0x16, 0xc8, 0x01],
            &[0x66, 0x0f, 0x3a, 0x22, 0x4f, 0x10, 0x03],
            &[0x66, 0x0f, 0x3a, 0x44, 0xc8, 0x00],
            &[0x66, 0x0f, 0x3a, 0xdf, 0xca, 0x01],
            &[0x66, 0x0f, 0x54, 0xd3],
            &[0x66, 0x0f, 0x56, 0xd0],
            &[0x66, 0x0f, 0x57, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0x66, 0x0f, 0x58, 0xc2],
            &[0x66, 0x0f, 0x59, 0xc1],
            &[0x66, 0x0f, 0x5a, 0xc9],
            &[0x66, 0x0f, 0x5e, 0xe0],
            &[0x66, 0x0f, 0x60, 0xf6],
            &[0x66, 0x0f, 0x62, 0xca],
            &[0x66, 0x0f, 0x64, 0xf7],
            &[0x66, 0x0f, 0x6a, 0xc0],
            &[0x66, 0x0f, 0x6c, 0xc0],
            &[0x66, 0x0f, 0x6d, 0xc1],
            &[0x66, 0x0f, 0x6e, 0xc6],
            &[0x66, 0x0f, 0x6f, 0xcd],
            &[0x66, 0x0f, 0x70, 0xd2, 0x39],
            &[0x66, 0x0f, 0x71, 0xd0, 0x08],
            &[0x66, 0x0f, 0x71, 0xe3, 0x04],
            &[0x66, 0x0f, 0x71, 0xf1, 0x08],
            &[0x66, 0x0f, 0x72, 0xd4, 0x10],
            &[0x66, 0x0f, 0x72, 0xe2, 0x1f],
            &[0x66, 0x0f, 0x72, 0xf0, 0x10],
            &[0x66, 0x0f, 0x73, 0xd0, 0x2a],
            &[0x66, 0x0f, 0x73, 0xd9, 0x08],
            &[0x66, 0x0f, 0x73, 0xf5, 0x03],
            &[0x66, 0x0f, 0x73, 0xfd, 0x08],
            &[0x66, 0x0f, 0x7e, 0xc0],
            &[0x66, 0x0f, 0x7f, 0x5d, 0x30],
            &[0x66, 0x0f, 0xae, 0x30],
            &[0x66, 0x0f, 0xae, 0x38],
            &[0x66, 0x0f, 0xae, 0xf1],
            &[0x66, 0x0f, 0xc2, 0xd4, 0x01],
            &[0x66, 0x0f, 0xc5, 0xc0, 0x00],
            &[0x66, 0x0f, 0xc6, 0xc4, 0x01],
            &[0x66, 0x0f, 0xc7, 0x34, 0x24],
            &[0x66, 0x0f, 0xdb, 0xcb],
            &[0x66, 0x0f, 0xdf, 0xc2],
            &[0x66, 0x0f, 0xe6, 0xc0],
            &[0x66, 0x0f, 0xe7, 0x54, 0x15, 0x00],
            &[0x66, 0x0f, 0xeb, 0xe0],
            &[0x66, 0x0f, 0xef, 0xe1],
            &[0x66, 0x0f, 0xfb, 0xc1],
            &[0x66, 0x0f, 0xfc, 0xe4],
            &[0x66, 0x0f, 0xfe, 0xca],
            &[0x66, 0x41, 0x0f, 0x10, 0xa6, 0xd8, 0x5e, 0x00, 0x00],
            &[0x66, 0x41, 0x0f, 0x16, 0x84, 0xd4, 0x68, 0xea, 0x00, 0x00],
            &[0x66, 0x41, 0x0f, 0x38, 0xdd, 0xf1],
            &[0x66, 0x41, 0x0f, 0x55, 0xc0],
            &[0x66, 0x41, 0x0f, 0xf4, 0xe4],
            &[0x66, 0x44, 0x0f, 0xc4, 0xc7, 0x07],
            &[0x66, 0x44, 0x0f, 0xd6, 0x02],
            &[0x66, 0x45, 0x0f, 0x5c, 0xc2],
            &[0x66, 0x45, 0x0f, 0x76, 0xd2],
            &[0x66, 0x45, 0x0f, 0xd4, 0xc1],
            &[0x66, 0x49, 0x0f, 0x7e, 0xd6],
            &[0x66, 0x4c, 0x0f, 0x38, 0xf6, 0x41, 0x08],
            &[0x66, 0x4c, 0x0f, 0x6e, 0xc8],
            &[0x66, 0xf2, 0x44, 0x0f, 0x38, 0xf1, 0x01],
            &[0x67, 0x4c, 0x8b, 0x09],
            &[0x67, 0x8b, 0x01],
            &[0x67, 0x8d, 0x04, 0x40],
            &[0xc4, 0x41, 0x01, 0x76, 0xff],
            &[0xc4, 0x41, 0x05, 0xef, 0xff],
            &[0xc4, 0x41, 0x11, 0xfb, 0xe3],
            &[0xc4, 0x41, 0x19, 0x64, 0xeb],
            &[0xc4, 0x41, 0x1d, 0x64, 0xeb],
            &[0xc4, 0x41, 0x21, 0xfc, 0xdb],
            &[0xc4, 0x41, 0x25, 0xfc, 0xdb],
            &[0xc4, 0x41, 0x29, 0xd4, 0xd2],
            &[0xc4, 0x41, 0x29, 0xdb, 0xde],
            &[0xc4, 0x41, 0x31, 0xfe, 0xc0],
            &[0xc4, 0x41, 0x39, 0xd2, 0xc4],
            &[0xc4, 0x41, 0x39, 0xf2, 0xfb],
            &[0xc4, 0x41, 0x79, 0x70, 0xc0, 0x4f],
            &[0xc4, 0x41, 0x7a, 0x7e, 0x04, 0x24],
            &[0xc4, 0x41, 0xf9, 0x6e, 0xc1],
            &[0xc4, 0x42, 0x45, 0x36, 0xc9],
            &[0xc4, 0x42, 0x6b, 0xf7, 0x11],
            &[0xc4, 0x42, 0x79, 0x1c, 0xed],
            &[0xc4, 0x42, 0x7d, 0x1c, 0xed],
            &[0xc4, 0x42, 0x7d, 0x59, 0x01],
            &[0xc4, 0x43, 0xb9, 0x22, 0xc2, 0x01],
            &[0xc4, 0x62, 0x60, 0xf2, 0xd8],
            &[0xc4, 0x62, 0x79, 0x17, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0xc4, 0x62, 0x79, 0x18, 0xa7, 0x20, 0x10, 0x00, 0x00],
            &[0xc4, 0x62, 0x7d, 0x58, 0x27],
            &[0xc4, 0x62, 0x7d, 0x5a, 0x24, 0x25, 0x00, 0x00, 0x00, 0x00],
            &[0xc4, 0x62, 0xbb, 0xf6, 0x0f],
            &[0xc4, 0x63, 0x1d, 0x38, 0x22, 0x01],
            &[0xc4, 0x63, 0xfb, 0xf0, 0xea, 0x29],
            &[0xc4, 0x63, 0xfd, 0x00, 0xd3, 0x02],
            &[0xc4, 0xc1, 0x1d, 0x6c, 0xd5],
            &[0xc4, 0xc1, 0x1d, 0x6d, 0xe5],
            &[0xc4, 0xc1, 0x29, 0x73, 0xda, 0x01],
            &[0xc4, 0xc1, 0x35, 0x73, 0xd8, 0x01],
            &[0xc4, 0xc1, 0x35, 0x73, 0xf8, 0x0c],
            &[0xc4, 0xc1, 0x39, 0x6c, 0xc1],
            &[0xc4, 0xc1, 0x39, 0x6d, 0xc9],
            &[0xc4, 0xc1, 0x6d, 0xfb, 0xd1],
            &[0xc4, 0xc1, 0x7a, 0x7f, 0x13],
            &[0xc4, 0xc1, 0x7c, 0x57, 0x45, 0x00],
            &[0xc4, 0xc2, 0x79, 0x00, 0xc1],
            &[0xc4, 0xc2, 0x79, 0xdd, 0xc4],
            &[0xc4, 0xc2, 0x7d, 0x00, 0xc4],
            &[0xc4, 0xc2, 0x7d, 0x2a, 0x14, 0xc6],
            &[0xc4, 0xc3, 0x7d, 0x18, 0x45, 0x00, 0x01],
            &[0xc4, 0xc3, 0x7d, 0x39, 0xc0, 0x01],
            &[0xc4, 0xe1, 0xf9, 0x7e, 0xc2],
            &[0xc4, 0xe1, 0xfb, 0x92, 0xc8],
            &[0xc4, 0xe2, 0x01, 0xf7, 0xcf],
            &[0xc4, 0xe2, 0x69, 0xdc, 0xd0],
            &[0xc4, 0xe2, 0x7d, 0x17, 0xd2],
            &[0xc4, 0xe2, 0x7d, 0x78, 0x7c, 0x24, 0x0f],
            &[0xc4, 0xe2, 0xc0, 0xf5, 0xc9],
            &[0xc4, 0xe2, 0xf1, 0xf7, 0xff],
            &[0xc4, 0xe2, 0xf3, 0xf7, 0xca],
            &[0xc4, 0xe2, 0xfa, 0xf7, 0xc1],
            &[0xc4, 0xe3, 0x39, 0x0f, 0xe9, 0x08],
            &[0xc4, 0xe3, 0x45, 0x06, 0xc6, 0x03],
            &[0xc4, 0xe3, 0x5d, 0x02, 0xe2, 0xf0],
            &[0xc4, 0xe3, 0x75, 0x46, 0xc4, 0x20],
            &[0xc4, 0xe3, 0x79, 0x44, 0xd6, 0x11],
            &[0xc4, 0xe3, 0x7b, 0xf0, 0xf6, 0x02],
            &[0xc4, 0xe3, 0x7d, 0x0f, 0xc6, 0x08],
            &[0xc4, 0xe3, 0xf9, 0x16, 0xc1, 0x01],
            &[0xc5, 0x09, 0xf4, 0xd5],
            &[0xc5, 0x31, 0xfa, 0xc1],
            &[0xc5, 0x45, 0xf4, 0xea],
            &[0xc5, 0x6d, 0x62, 0xe4],
            &[0xc5, 0x6d, 0x6a, 0xf4],
            &[0xc5, 0x79, 0x62, 0xc1],
            &[0xc5, 0x79, 0x6a, 0xe9],
            &[0xc5, 0x79, 0x6e, 0x34, 0x25, 0x00, 0x00, 0x00, 0x00],
            &[0xc5, 0x79, 0x6f, 0x0c, 0x25, 0x00, 0x00, 0x00, 0x00],
            &[0xc5, 0x79, 0x7e, 0x57, 0x90],
            &[0xc5, 0x79, 0xd6, 0x01],
            &[0xc5, 0x7a, 0x6f, 0xa7, 0x00, 0x10, 0x00, 0x00],
            &[0xc5, 0x7c, 0x10, 0x15, 0x00, 0x00, 0x00, 0x00],
            &[0xc5, 0x7d, 0x28, 0xe8],
            &[0xc5, 0x7d, 0x6f, 0x0d, 0x00, 0x00, 0x00, 0x00],
            &[0xc5, 0x81, 0x72, 0xf3, 0x01],
            &[0xc5, 0x81, 0xdf, 0xc0],
            &[0xc5, 0x81, 0xeb, 0xdb],
            &[0xc5, 0x85, 0xdf, 0xc0],
            &[0xc5, 0x99, 0xef, 0xc0],
            &[0xc5, 0xad, 0x72, 0xf6, 0x0d],
            &[0xc5, 0xb1, 0x73, 0xfd, 0x0c],
            &[0xc5, 0xbd, 0xeb, 0xca],
            &[0xc5, 0xcd, 0x71, 0xe3, 0x04],
            &[0xc5, 0xcd, 0x72, 0xd6, 0x13],
            &[0xc5, 0xdd, 0xd4, 0x07],
            &[0xc5, 0xe1, 0x72, 0xd3, 0x1f],
            &[0xc5, 0xe1, 0x73, 0xf4, 0x03],
            &[0xc5, 0xe5, 0x73, 0xf1, 0x3f],
            &[0xc5, 0xe5, 0xfe, 0x1d, 0x00, 0x00, 0x00, 0x00],
            &[0xc5, 0xed, 0x73, 0xd1, 0x01],
            &[0xc5, 0xf5, 0xdb, 0xd0],
            &[0xc5, 0xf8, 0x77],
            &[0xc5, 0xf8, 0x92, 0xd0],
            &[0xc5, 0xf9, 0x73, 0xd4, 0x3d],
            &[0xc5, 0xf9, 0x7f, 0x04, 0x24],
            &[0xc5, 0xfc, 0x77],
            &[0xc5, 0xfd, 0x70, 0xc9, 0x39],
            &[0xc5, 0xfd, 0x76, 0xc0],
            &[0xc5, 0xfd, 0x7f, 0x16],
            &[0xc5, 0xfd, 0xe7, 0x54, 0x15, 0x00],
            &[0xc5, 0xfe, 0x6f, 0x12],
            &[0xc5, 0xfe, 0x7f, 0x16],
            &[0xd9, 0x7c, 0x24, 0x0c],
            &[0xdb, 0x07],
            &[0xdb, 0x5c, 0x24, 0x04],
            &[0xdb, 0xe2],
            &[0xdb, 0xe3],
            &[0xdc, 0x0d, 0x00, 0x00, 0x00, 0x00],
            &[0xdc, 0x35, 0x00, 0x00, 0x00, 0x00],
            &[0xdd, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0xdd, 0x7c, 0x24, 0x0e],
            &[0xde, 0xe1],
            &[0xf2, 0x0f, 0x00, 0xf7],
            &[0xf2, 0x0f, 0x10, 0x83, 0x90, 0x02, 0x00, 0x00],
            &[0xf2, 0x0f, 0x11, 0x0c, 0x24],
            &[0xf2, 0x0f, 0x2c, 0xc0],
            &[0xf2, 0x0f, 0x38, 0xf0, 0x02],
            &[0xf2, 0x0f, 0x58, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0xf2, 0x0f, 0x59, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0xf2, 0x0f, 0x5a, 0xc0],
            &[0xf2, 0x0f, 0x5c, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0xf2, 0x0f, 0x5d, 0xdd],
            &[0xf2, 0x0f, 0x5e, 0xc1],
            &[0xf2, 0x0f, 0x5f, 0xca],
            &[0xf2, 0x0f, 0xc2, 0xc3, 0x02],
            &[0xf2, 0x41, 0x0f, 0x2a, 0xdd],
            &[0xf2, 0x44, 0x0f, 0x38, 0xf1, 0x01],
            &[0xf2, 0x48, 0x0f, 0x2a, 0xc0],
            &[0xf2, 0x48, 0x0f, 0x2c, 0xc0],
            &[0xf2, 0x48, 0x0f, 0x38, 0xf1, 0x03],
            &[0xf3, 0x0f, 0x10, 0x0d, 0x00, 0x00, 0x00, 0x00],
            &[0xf3, 0x0f, 0x11, 0x54, 0x24, 0x04],
            &[0xf3, 0x0f, 0x2a, 0xc0],
            &[0xf3, 0x0f, 0x2c, 0xd0],
            &[0xf3, 0x0f, 0x58, 0xc0],
            &[0xf3, 0x0f, 0x59, 0xc8],
            &[0xf3, 0x0f, 0x5a, 0xd8],
            &[0xf3, 0x0f, 0x5b, 0xc0],
            &[0xf3, 0x0f, 0x5c, 0x05, 0x00, 0x00, 0x00, 0x00],
            &[0xf3, 0x0f, 0x5d, 0xd1],
            &[0xf3, 0x0f, 0x5e, 0xc1],
            &[0xf3, 0x0f, 0x5f, 0xc1],
            &[0xf3, 0x0f, 0x6f, 0x44, 0x24, 0x48],
            &[0xf3, 0x0f, 0x7f, 0x07],
            &[0xf3, 0x0f, 0xc2, 0xc2, 0x01],
            &[0xf3, 0x0f, 0xc7, 0x74, 0x24, 0x08],
            &[0xf3, 0x0f, 0xc7, 0xf8],
            &[0xf3, 0x0f, 0xe6, 0xc0],
            &[0xf3, 0x44, 0x0f, 0x7e, 0x02],
            &[0xf3, 0x48, 0x0f, 0x2a, 0xce],
            &[0xf3, 0x48, 0x0f, 0x2c, 0xc0],
            &[0xf3, 0x48, 0x0f, 0xae, 0xc0],
            &[0xf3, 0x48, 0x0f, 0xae, 0xc8],
            &[0xf3, 0x48, 0x0f, 0xae, 0xd0],
            &[0xf3, 0x48, 0x0f, 0xae, 0xdf],
            &[0xf3, 0x4d, 0x0f, 0x38, 0xf6, 0xd1],
        ];
        for bytes in seen {
            let mut b = bytes.to_vec();
            b.resize(16, 0x90);
            assert!(check(&b, 0x1000), "{bytes:02x?} left to iced");
        }
    }

    /// The code of real objects (`X86_FAST_OBJS`: paths separated by `:`, a kernel's
    /// `vmlinux.o`, a distribution's modules), instruction by instruction as iced reads it:
    /// `X86_FAST_OBJS=... cargo test --release -p elfdiff real_code -- --ignored`.
    #[test]
    #[ignore]
    fn agrees_with_iced_on_real_code() {
        use object::{Object as _, ObjectSection as _, SectionFlags};
        let paths = std::env::var("X86_FAST_OBJS").expect("X86_FAST_OBJS");
        let (mut total, mut fast) = (0usize, 0usize);
        for path in paths.split(':').filter(|p| !p.is_empty()) {
            let data = std::fs::read(path).expect("readable");
            let Ok(file) = object::File::parse(&*data) else {
                continue;
            };
            for sec in file.sections() {
                let exec = matches!(sec.flags(), SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
                let Ok(code) = sec.data() else { continue };
                if !exec || code.is_empty() {
                    continue;
                }
                let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
                while d.can_decode() {
                    let insn = d.decode();
                    let at = insn.ip() as usize;
                    let end = (at + 16).min(code.len());
                    total += 1;
                    if check(&code[at..end], at as u64) {
                        fast += 1;
                    }
                }
            }
        }
        eprintln!("{fast} of {total} instructions decoded without iced");
    }

    /// How often real code falls back to iced (and so builds its tables, about 3 M
    /// instructions): `X86_FAST_LIST` names a file of object paths, one a line (relocatable
    /// objects or modules; other machines are skipped). Every executable section is walked as
    /// `Arch::decode` walks it; what [`length`] leaves to iced is counted by iced's `Code`, with
    /// the sections and objects that have any, and every length [`length`] gives is held to
    /// iced's: `X86_FAST_LIST=... cargo test --release -p elfdiff fallbacks -- --ignored`.
    #[test]
    #[ignore]
    fn fallbacks_in_real_code() {
        use object::{Architecture, Object as _, ObjectSection as _, SectionFlags};
        use std::collections::{BTreeMap, BTreeSet};
        let list = std::env::var("X86_FAST_LIST").expect("X86_FAST_LIST");
        let list = std::fs::read_to_string(list).expect("readable list");
        let (mut objects, mut sections, mut insns) = (0usize, 0usize, 0usize);
        let (mut fb_objects, mut fb_sections, mut fb_insns) = (0usize, 0usize, 0usize);
        let mut wrong = 0usize;
        // iced's Code -> (instructions, sections, objects, an example's bytes).
        /// Of one `Code`: instructions, (object, section) pairs, objects, an example.
        type Group = (usize, BTreeSet<(usize, usize)>, BTreeSet<usize>, String);
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for (k, path) in list.lines().filter(|p| !p.is_empty()).enumerate() {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            let Ok(file) = object::File::parse(&*data) else {
                continue;
            };
            if file.architecture() != Architecture::X86_64 {
                continue;
            }
            objects += 1;
            let mut obj_fb = false;
            for (n, sec) in file.sections().enumerate() {
                let exec = matches!(sec.flags(), SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
                let Ok(code) = sec.data() else { continue };
                if !exec || code.is_empty() {
                    continue;
                }
                sections += 1;
                let mut sec_fb = false;
                let mut at = 0;
                while at < code.len() {
                    let rest = &code[at..];
                    let mut d = Decoder::with_ip(64, rest, at as u64, DecoderOptions::NONE);
                    let insn = d.decode();
                    insns += 1;
                    let len = match length(rest) {
                        Some(len) => {
                            if len != insn.len() || insn.is_invalid() {
                                wrong += 1;
                                eprintln!(
                                    "WRONG {path} {} +{at:#x}: {:02x?} fast {len} iced {} ({insn})",
                                    sec.name().unwrap_or("?"),
                                    &rest[..rest.len().min(16)],
                                    insn.len()
                                );
                            }
                            len
                        }
                        None => {
                            fb_insns += 1;
                            sec_fb = true;
                            let g =
                                groups
                                    .entry(format!("{:?}", insn.code()))
                                    .or_insert_with(|| {
                                        let bytes = &rest[..insn.len().clamp(1, rest.len())];
                                        (
                                            0,
                                            BTreeSet::new(),
                                            BTreeSet::new(),
                                            format!("{bytes:02x?} {insn}"),
                                        )
                                    });
                            g.0 += 1;
                            g.1.insert((k, n));
                            g.2.insert(k);
                            insn.len().max(1)
                        }
                    };
                    at += len;
                }
                if sec_fb {
                    fb_sections += 1;
                    obj_fb = true;
                }
            }
            if obj_fb {
                fb_objects += 1;
            }
        }
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_by_key(|(_, g)| std::cmp::Reverse((g.2.len(), g.1.len(), g.0)));
        for (code, (n, secs, objs, example)) in &rows {
            eprintln!(
                "{:6} insns {:6} sections {:5} objects  {code}  e.g. {example}",
                n,
                secs.len(),
                objs.len()
            );
        }
        eprintln!(
            "TOTAL objects {objects} sections {sections} insns {insns}; \
             fallback objects {fb_objects} sections {fb_sections} insns {fb_insns}; \
             lengths unlike iced's {wrong}"
        );
        assert_eq!(wrong, 0);
    }

    /// Every ModRM byte, not a sample: `cargo test --release -p elfdiff -- --ignored`.
    #[test]
    #[ignore]
    fn agrees_with_iced_everywhere() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        sweep(1, &mut rng);
        sweep_ext(1, &mut rng);
        for _ in 0..5_000_000 {
            let b: Vec<u8> = (0..16).map(|_| rng.byte()).collect();
            check(&b, rng.next() & 0xffff);
        }
    }
}
