#[derive(courier::Ipc)]
#[repr(C, packed)]
struct Packed {
    a: u8,
    b: u32,
}

#[derive(courier::Ipc)]
#[repr(C)]
union Either {
    a: u32,
    b: f32,
}

fn main() {}
