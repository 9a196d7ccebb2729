//! Sections copied piece by piece instead of whole: the pieces of one section, which of them
//! the livepatch needs, where the needed ones land when packed into the output section, and
//! where any offset of the original section lands.
//!
//! A section such as x86's `.altinstr_replacement` holds the replacement code of every
//! alternative of the object; copied whole, the livepatch would carry the replacements (and
//! their jumps back into their functions) of functions it does not replace. The plan
//! (`plan.rs`) cuts such a section into pieces, marks those referenced by what the livepatch
//! carries, lays them out in their original order (each at an offset congruent to its
//! original one modulo the section's alignment) and translates every offset with
//! [`Carve::new_offset`].
//!
//! Code sections (`Arch::carved_code_sections`) are cut at every offset an allocated section
//! refers to: the relocation's symbol value plus addend plus the bias at its site (a
//! PC-relative field in code counts from the end of its instruction, one in data from itself).
//! Sections of one object per symbol (`__dyndbg`) are cut at their symbols' ranges. A referrer
//! may say how many bytes it uses (an `alt_instr` entry: `replacementlen` at the offset the
//! target's DWARF gives, `Arch::entry_reference_len`), so an empty replacement sharing its
//! offset with another function's needs none; a reference to no copied byte goes where the
//! next copied piece starts. Code that runs where it lies (`CarvedCode::in_place`: x86's
//! `.altinstr_aux` and `.fixup`, not the replacements copied over their function's code) may
//! run on past a piece's end when its last instruction is no jump, return or trap
//! (`Arch::falls_through`): the next piece is then needed too ([`Carve::need_piece`]); a cut in
//! the middle of such code (an ORC entry points there) splits nothing that runs. A reference
//! outside the section or into no piece, overlapping ranges, or a relocation field cut in two
//! is an error ([`CarveError`], `Error::Carve`).

/// Why a reference into a carved section cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarveError {
    #[error("the reference to offset {offset:#x} (length {len:?}) lies outside the section's {size} bytes")]
    Outside {
        offset: i64,
        len: Option<u64>,
        size: u64,
    },
    #[error("offset {offset:#x} lies in no piece of the section (no symbol covers it)")]
    Uncovered { offset: u64 },
    #[error("symbols at {a:#x}..{a_end:#x} and {b:#x}..{b_end:#x} overlap; the section cannot be cut by symbols")]
    Overlap {
        a: u64,
        a_end: u64,
        b: u64,
        b_end: u64,
    },
    #[error("the symbol range {start:#x}..{end:#x} lies outside the section's {size} bytes")]
    RangeOutside { start: u64, end: u64, size: u64 },
    #[error("the relocation field at {offset:#x} crosses the end of its piece at {end:#x}")]
    Straddle { offset: u64, end: u64 },
}

/// The pieces of one section and their placement in the output section.
#[derive(Debug, Clone)]
pub struct Carve {
    size: u64,
    align: u64,
    /// Sorted, disjoint `[start, end)` ranges, none empty.
    pieces: Vec<(u64, u64)>,
    needed: Vec<bool>,
    /// Output offset of each needed piece, once laid out.
    placed: Vec<Option<u64>>,
    out_size: u64,
    laid_out: bool,
}

impl Carve {
    fn new(size: u64, align: u64, pieces: Vec<(u64, u64)>) -> Self {
        let n = pieces.len();
        Carve {
            size,
            align: align.max(1),
            pieces,
            needed: vec![false; n],
            placed: vec![None; n],
            out_size: 0,
            laid_out: false,
        }
    }

    /// Pieces between consecutive cut points (the offsets something refers to): each piece runs
    /// from one cut to the next, the last to the section's end. Offset 0 always starts a piece;
    /// cuts at or past the end start none.
    pub fn by_cuts(size: u64, align: u64, cuts: impl IntoIterator<Item = u64>) -> Self {
        let mut cuts: Vec<u64> = cuts.into_iter().filter(|&c| c < size).collect();
        cuts.push(0);
        cuts.sort_unstable();
        cuts.dedup();
        let pieces = cuts
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, cuts.get(i + 1).copied().unwrap_or(size)))
            .filter(|(s, e)| s < e)
            .collect();
        Carve::new(size, align, pieces)
    }

    /// Pieces that are given ranges (one object per symbol). Empty ranges are ignored, equal
    /// ranges (aliases) merged; overlapping ones or ones outside the section are an error.
    pub fn by_ranges(
        size: u64,
        align: u64,
        ranges: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, CarveError> {
        let mut r: Vec<(u64, u64)> = ranges.into_iter().filter(|(s, e)| s < e).collect();
        r.sort_unstable();
        r.dedup();
        for &(start, end) in &r {
            if end > size {
                return Err(CarveError::RangeOutside { start, end, size });
            }
        }
        for w in r.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(CarveError::Overlap {
                    a: w[0].0,
                    a_end: w[0].1,
                    b: w[1].0,
                    b_end: w[1].1,
                });
            }
        }
        Ok(Carve::new(size, align, r))
    }

    pub fn pieces(&self) -> &[(u64, u64)] {
        &self.pieces
    }

    pub fn is_needed(&self, piece: usize) -> bool {
        self.needed[piece]
    }

    /// The piece holding byte `offset`.
    pub fn piece_at(&self, offset: u64) -> Option<usize> {
        let i = self.pieces.partition_point(|&(s, _)| s <= offset);
        let i = i.checked_sub(1)?;
        (offset < self.pieces[i].1).then_some(i)
    }

    /// Mark what a reference to `offset` needs and return the pieces that were not needed
    /// before. `len`: how many bytes from `offset` the referrer uses, if it says (`Some(0)`: a
    /// zero-length reference, which needs no bytes); `None`: the piece at `offset`, or nothing
    /// at the section's very end.
    pub fn need(&mut self, offset: i64, len: Option<u64>) -> Result<Vec<usize>, CarveError> {
        let outside = CarveError::Outside {
            offset,
            len,
            size: self.size,
        };
        let Some(start) = u64::try_from(offset).ok().filter(|&s| s <= self.size) else {
            return Err(outside);
        };
        let end = match len {
            Some(l) => start.checked_add(l).ok_or(outside.clone())?,
            None if start == self.size => start,
            None => {
                let p = self
                    .piece_at(start)
                    .ok_or(CarveError::Uncovered { offset: start })?;
                self.pieces[p].1
            }
        };
        if start > self.size || end > self.size {
            return Err(outside);
        }
        let mut fresh = Vec::new();
        let mut at = start;
        while at < end {
            let p = self
                .piece_at(at)
                .ok_or(CarveError::Uncovered { offset: at })?;
            if !self.needed[p] {
                self.needed[p] = true;
                self.laid_out = false;
                fresh.push(p);
            }
            at = self.pieces[p].1;
        }
        Ok(fresh)
    }

    /// Mark piece `piece` needed (code of the piece before it runs on into it); true when it
    /// was not needed before, false when it was or there is no such piece.
    pub fn need_piece(&mut self, piece: usize) -> bool {
        match self.needed.get_mut(piece) {
            Some(n) if !*n => {
                *n = true;
                self.laid_out = false;
                true
            }
            _ => false,
        }
    }

    /// Check that a relocation field `[offset, offset + width)` inside a needed piece does not
    /// run past that piece.
    pub fn check_field(&self, offset: u64, width: u64) -> Result<(), CarveError> {
        let p = self
            .piece_at(offset)
            .ok_or(CarveError::Uncovered { offset })?;
        let end = self.pieces[p].1;
        if offset.saturating_add(width) > end {
            return Err(CarveError::Straddle { offset, end });
        }
        Ok(())
    }

    /// Place the needed pieces in their original order, each at the first offset not before
    /// the previous one's end that is congruent to its original offset modulo the section's
    /// alignment (so everything inside keeps its alignment).
    pub fn layout(&mut self) {
        let mut out = 0u64;
        let mask = if self.align.is_power_of_two() {
            self.align - 1
        } else {
            0
        };
        for (i, &(start, end)) in self.pieces.iter().enumerate() {
            if !self.needed[i] {
                self.placed[i] = None;
                continue;
            }
            let at = out + (start.wrapping_sub(out) & mask);
            self.placed[i] = Some(at);
            out = at + (end - start);
        }
        self.out_size = out;
        self.laid_out = true;
    }

    /// Size of the output section (after [`Carve::layout`]).
    pub fn out_size(&self) -> u64 {
        debug_assert!(self.laid_out);
        self.out_size
    }

    /// Where original `offset` lands in the output section (after [`Carve::layout`]): inside a
    /// needed piece, at the same distance from the piece's new start; elsewhere (only
    /// zero-length references point there) where the bytes from `offset` on would start: at
    /// the next needed piece, or at the output's end.
    pub fn new_offset(&self, offset: u64) -> u64 {
        debug_assert!(self.laid_out);
        if let Some(p) = self.piece_at(offset) {
            if let Some(at) = self.placed[p] {
                return at + (offset - self.pieces[p].0);
            }
        }
        self.pieces
            .iter()
            .zip(&self.placed)
            .find_map(|(&(s, _), &at)| at.filter(|_| s >= offset))
            .unwrap_or(self.out_size)
    }

    /// The output section's bytes (after [`Carve::layout`]): the needed pieces of `data`, the
    /// gaps filled with `fill`.
    pub fn assemble(&self, data: &[u8], fill: u8) -> Vec<u8> {
        debug_assert!(self.laid_out);
        let mut out = Vec::with_capacity(self.out_size as usize);
        for (&(s, e), &at) in self.pieces.iter().zip(&self.placed) {
            let Some(at) = at else { continue };
            out.resize(at as usize, fill);
            // Pieces lie inside the section; a short `data` (malformed) gives fill bytes.
            let bytes = data.get(s as usize..e as usize).unwrap_or(&[]);
            out.extend_from_slice(bytes);
            out.resize((at + (e - s)) as usize, fill);
        }
        out.resize(self.out_size as usize, fill);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn laid(mut c: Carve) -> Carve {
        c.layout();
        c
    }

    #[test]
    fn cuts_make_pieces_up_to_the_next_cut() {
        let c = Carve::by_cuts(0x1f, 1, [0x1f, 0x5, 0x0, 0x5, 0x10, 0x40]);
        assert_eq!(c.pieces(), &[(0, 5), (5, 0x10), (0x10, 0x1f)]);
        // Bytes before the first referenced offset are a piece of their own.
        let c = Carve::by_cuts(8, 1, [3]);
        assert_eq!(c.pieces(), &[(0, 3), (3, 8)]);
        assert_eq!(c.piece_at(2), Some(0));
        assert_eq!(c.piece_at(3), Some(1));
        assert_eq!(c.piece_at(8), None);
        assert!(Carve::by_cuts(0, 1, [0]).pieces().is_empty());
    }

    #[test]
    fn only_needed_pieces_are_packed_and_offsets_follow_them() {
        // Replacements at 0 (5 bytes), 5 (3), 8 (5), and an empty one at 0xd (the end).
        let mut c = Carve::by_cuts(0xd, 1, [0, 5, 8, 0xd]);
        assert_eq!(c.need(8, None).unwrap(), vec![2]);
        assert_eq!(c.need(8, Some(5)).unwrap(), Vec::<usize>::new());
        let c = laid(c);
        assert_eq!(c.out_size(), 5);
        assert_eq!(c.new_offset(8), 0);
        assert_eq!(c.new_offset(0xc), 4);
        // The section's end maps to the output's end.
        assert_eq!(c.new_offset(0xd), 5);
        let data: Vec<u8> = (0..0xd).collect();
        assert_eq!(c.assemble(&data, 0xcc), vec![8, 9, 10, 11, 12]);
    }

    #[test]
    fn zero_length_reference_shares_an_offset_without_needing_its_piece() {
        // An empty replacement at 5 shares the offset with the next one's bytes [5, 8).
        let mut c = Carve::by_cuts(0xd, 1, [0, 5, 8]);
        assert_eq!(c.need(0, Some(5)).unwrap(), vec![0]);
        assert!(c.need(5, Some(0)).unwrap().is_empty());
        assert!(c.need(0xd, Some(0)).unwrap().is_empty());
        let c = laid(c);
        assert!(!c.is_needed(1));
        assert_eq!(c.out_size(), 5);
        // Where [5, ..) would start: nothing follows, so the output's end.
        assert_eq!(c.new_offset(5), 5);
        assert_eq!(c.new_offset(0xd), 5);

        // The same with a needed piece after the gap: the zero-length offset moves with it.
        let mut c = Carve::by_cuts(0xd, 1, [0, 5, 8]);
        c.need(5, Some(0)).unwrap();
        c.need(8, None).unwrap();
        let c = laid(c);
        assert_eq!(c.new_offset(5), 0);
        assert_eq!(c.new_offset(8), 0);
    }

    #[test]
    fn a_length_spanning_a_cut_needs_every_piece_it_covers() {
        // A 5-byte replacement at 0 whose middle (2) something else refers to.
        let mut c = Carve::by_cuts(8, 1, [0, 2, 5]);
        assert_eq!(c.need(0, Some(5)).unwrap(), vec![0, 1]);
        let c = laid(c);
        assert_eq!(c.out_size(), 5);
        assert_eq!(c.new_offset(2), 2);
        assert_eq!(c.new_offset(5), 5);
    }

    #[test]
    fn references_outside_the_section_are_errors() {
        let mut c = Carve::by_cuts(8, 1, [0, 4]);
        assert!(matches!(c.need(-4, None), Err(CarveError::Outside { .. })));
        assert!(matches!(c.need(9, None), Err(CarveError::Outside { .. })));
        assert!(matches!(
            c.need(9, Some(0)),
            Err(CarveError::Outside { .. })
        ));
        assert!(matches!(
            c.need(4, Some(5)),
            Err(CarveError::Outside { .. })
        ));
        assert!(matches!(
            c.need(i64::MAX, Some(u64::MAX)),
            Err(CarveError::Outside { .. })
        ));
        // The end itself is a valid (empty) reference.
        assert_eq!(c.need(8, None).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn alignment_is_kept_modulo_the_section_alignment() {
        // Descriptors of 40 bytes at 0 and 0x40 in a 32-aligned section, and one at 0x80.
        let mut c = Carve::by_ranges(0xa8, 32, [(0x40, 0x68), (0x80, 0xa8), (0, 0x28)]).unwrap();
        assert_eq!(c.pieces(), &[(0, 0x28), (0x40, 0x68), (0x80, 0xa8)]);
        c.need(0x80 + 0x1a, None).unwrap();
        c.need(0x40, None).unwrap();
        let c = laid(c);
        assert_eq!(c.new_offset(0x40), 0);
        assert_eq!(c.new_offset(0x80), 0x40);
        assert_eq!(c.new_offset(0x80 + 0x1a), 0x5a);
        assert_eq!(c.out_size(), 0x68);
        let data = vec![1u8; 0xa8];
        let out = c.assemble(&data, 0);
        assert_eq!(out.len(), 0x68);
        assert!(out[..0x28].iter().all(|&b| b == 1));
        assert!(out[0x28..0x40].iter().all(|&b| b == 0));
        assert!(out[0x40..].iter().all(|&b| b == 1));
    }

    #[test]
    fn ranges_must_not_overlap_and_gaps_are_uncovered() {
        assert!(matches!(
            Carve::by_ranges(0x50, 8, [(0, 0x30), (0x28, 0x50)]),
            Err(CarveError::Overlap { .. })
        ));
        assert!(matches!(
            Carve::by_ranges(0x50, 8, [(0x40, 0x58)]),
            Err(CarveError::RangeOutside { .. })
        ));
        // Aliases (equal ranges) and empty ranges are fine.
        let mut c = Carve::by_ranges(0x50, 8, [(0, 0x28), (0, 0x28), (0x30, 0x30)]).unwrap();
        assert_eq!(c.pieces(), &[(0, 0x28)]);
        assert!(matches!(
            c.need(0x2c, None),
            Err(CarveError::Uncovered { offset: 0x2c })
        ));
        // A length running from a piece into a gap.
        assert!(matches!(
            c.need(0x20, Some(0x10)),
            Err(CarveError::Uncovered { offset: 0x28 })
        ));
    }

    #[test]
    fn fields_must_stay_inside_their_piece() {
        let c = Carve::by_cuts(0x10, 1, [0, 6]);
        assert!(c.check_field(1, 4).is_ok());
        assert!(c.check_field(2, 4).is_ok());
        assert_eq!(
            c.check_field(3, 4),
            Err(CarveError::Straddle { offset: 3, end: 6 })
        );
    }
}
