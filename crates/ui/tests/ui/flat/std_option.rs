#[derive(courier::Ipc)]
#[repr(C)]
struct HasStdOption {
    maybe: Option<u32>,
}

fn main() {}
