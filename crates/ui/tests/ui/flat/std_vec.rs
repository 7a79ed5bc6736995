#[derive(courier::Ipc)]
#[repr(C)]
struct HasVec {
    items: Vec<u32>,
}

fn main() {}
