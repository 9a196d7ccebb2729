//! Writes gzip-compressed initramfs images in the cpio "newc" format.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An in-memory cpio archive being assembled.
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl Default for Archive {
    fn default() -> Self {
        Self::new()
    }
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Archive {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, h: Header<'_>) {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if h.mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            h.mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed for reproducible images
            h.data.len() as u32,
            0, // devmajor
            0, // devminor
            h.rdev.0,
            h.rdev.1,
            h.name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(h.name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(h.data);
        self.pad();
    }

    fn pad(&mut self) {
        let len = self.buf.len().next_multiple_of(4);
        self.buf.resize(len, 0);
    }

    /// Adds a directory (`name` has no leading slash, e.g. `"bin"`).
    pub fn dir(&mut self, name: &str) {
        self.entry(Header {
            name,
            mode: S_IFDIR | 0o755,
            rdev: (0, 0),
            data: &[],
        });
    }

    /// Adds a regular file with the given permission bits.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(Header {
            name,
            mode: S_IFREG | (perm & 0o7777),
            rdev: (0, 0),
            data,
        });
    }

    /// Adds a symbolic link `name` -> `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(Header {
            name,
            mode: S_IFLNK | 0o777,
            rdev: (0, 0),
            data: target.as_bytes(),
        });
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(Header {
            name,
            mode: S_IFCHR | (perm & 0o7777),
            rdev: (major, minor),
            data: &[],
        });
    }

    /// Terminates the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry(Header {
            name: "TRAILER!!!",
            mode: 0,
            rdev: (0, 0),
            data: &[],
        });
        // The kernel reads in 512-byte blocks happily either way; pad like cpio(1) does.
        let len = self.buf.len().next_multiple_of(512);
        self.buf.resize(len, 0);
        self.buf
    }
}

/// Compresses `data` with `gzip -9 -n` into `out`.
pub fn write_gzip(data: &[u8], out: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut child = Command::new("gzip")
        .arg("-9")
        .arg("-n")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("cannot start gzip")?;
    {
        let mut stdin = child.stdin.take().context("gzip stdin")?;
        stdin.write_all(data).context("writing to gzip")?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Archive::new();
        a.dir("bin");
        a.file("bin/x", 0o755, b"hello");
        a.symlink("bin/sh", "busybox");
        let bytes = a.finish();
        assert_eq!(&bytes[..6], b"070701");
        // First header: ino 1, directory mode.
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ED");
        // Name "bin\0" follows the 110-byte header, padded to a multiple of 4.
        assert_eq!(&bytes[110..114], b"bin\0");
        let second = 116; // 110 + 4 = 114, padded to 116
        assert_eq!(&bytes[second..second + 6], b"070701");
        assert_eq!(bytes.len() % 512, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
        assert!(text.contains("hello"));
    }

    /// Cross-checks the archive with the system `cpio` tool when it is installed.
    #[test]
    fn cpio_tool_reads_it() {
        if Command::new("cpio").arg("--version").output().is_err() {
            return;
        }
        let mut a = Archive::new();
        a.dir("d");
        a.file("d/f", 0o644, b"content\n");
        a.symlink("d/l", "f");
        let bytes = a.finish();
        let mut child = Command::new("cpio")
            .arg("-t")
            .arg("-v")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("d/f"), "{listing}");
        assert!(listing.contains("d/l -> f"), "{listing}");
    }
}
