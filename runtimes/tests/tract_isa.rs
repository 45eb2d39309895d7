//! tract 0.23.9's AMX int8 kernel reads past its packed panels (a sporadic SIGSEGV on AMX CPUs, see
//! `effv2_runtime::avoid_tract_amx_int8`): once effv2-runtime has set up tract, the instruction
//! set tract dispatches on must not offer AMX int8, whatever this CPU has. (Passes trivially on
//! CPUs without AMX; fails on one with it if tract stops honouring the setting.)
#![cfg(all(feature = "tract", target_arch = "x86_64"))]

#[test]
fn tract_dispatches_no_amx_int8_kernel_once_the_runtime_set_it_up() {
    effv2_runtime::avoid_tract_amx_int8();
    let isa = tract_linalg::isa::native();
    println!("tract's instruction set here: {isa:?}");
    assert!(!isa.has(tract_linalg::isa::Isa::X86_64AmxInt8), "{isa:?}");
}
