#[derive(courier::Ipc)]
#[repr(C)]
struct HasPointer {
    len: u32,
    data: *const u8,
}

fn main() {}
