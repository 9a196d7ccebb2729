//! Fuzz target: the klp markings (`finalize_module`) and the module checks (`patchgen::check`)
//! on an arbitrary "linked module"; the input also serves as the target's vmlinux.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchgen::check::{check_module, check_structure, Inputs, TargetObject};
use patchgen::klp::finalize_module;

fuzz_target!(|data: &[u8]| {
    let _ = check_structure("input.ko", data);
    let Ok((out, _summary)) = finalize_module("input.ko", data) else {
        return;
    };
    let _ = check_structure("finalized.ko", &out);
    let target =
        TargetObject::vmlinux("vmlinux", data).or_else(|_| TargetObject::module("target.ko", data));
    if let Ok(vmlinux) = target {
        let inputs = Inputs {
            vmlinux: &vmlinux,
            symvers: None,
            modules: None,
        };
        let _ = check_module("finalized.ko", &out, &inputs);
    }
});
