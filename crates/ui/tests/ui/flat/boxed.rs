#[derive(courier::Ipc)]
#[repr(C)]
struct HasBox {
    value: Box<u64>,
}

fn main() {}
