#[derive(courier::Ipc)]
#[repr(C)]
struct Wrapper<T> {
    value: T,
}

fn main() {
    let _ = Wrapper { value: &0u8 }.into_ipc();
}
