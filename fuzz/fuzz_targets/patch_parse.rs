//! Fuzz target: the patch-file parser (`touched_files`); besides not panicking, every path it
//! accepts must stay inside the tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(files) = patchgen::patchfile::touched_files(&text) {
        for f in &files {
            assert!(!f.starts_with('/'), "absolute path accepted: {f:?}");
            assert!(
                !f.split('/').any(|c| c == ".."),
                "path leaving the tree accepted: {f:?}"
            );
        }
        let mut sorted = files.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), files.len(), "duplicate files: {files:?}");
    }
});
