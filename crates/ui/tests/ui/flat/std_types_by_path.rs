#[derive(courier::Ipc)]
#[repr(C)]
struct FullPaths {
    a: std::string::String,
}

#[derive(courier::Ipc)]
#[repr(C)]
struct StdOption {
    b: std::option::Option<u8>,
}

#[derive(courier::Ipc)]
#[repr(C)]
struct Nested {
    c: [courier::flat::Option<std::vec::Vec<u8>>; 2],
}

fn main() {}
