#[derive(courier::Ipc)]
#[repr(C)]
struct HasString {
    name: String,
}

fn main() {}
