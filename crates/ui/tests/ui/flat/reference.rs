#[derive(courier::Ipc)]
#[repr(C)]
struct HasReference<'a> {
    value: &'a u32,
}

fn main() {}
